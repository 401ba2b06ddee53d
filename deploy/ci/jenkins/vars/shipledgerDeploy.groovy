/**
 * shipledgerDeploy: record a deployment stage in shipledger from a Jenkins pipeline.
 * The logic is deploy/ci/shipledger-step.sh, found at env.SHIPLEDGER_STEP_SCRIPT (default
 * .shipledger/shipledger-step.sh: vendor it into your repository) or downloaded from
 * env.SHIPLEDGER_STEP_URL. Usage: deploy/ci/jenkins/README.md.
 *
 *   shipledgerDeploy(command: 'start')                        // sets env.SHIPLEDGER_DEPLOYMENT_ID
 *   shipledgerDeploy(run: './deploy.sh', service: 'checkout', environment: 'prod')
 *   shipledgerDeploy(run: './rollback.sh', kind: 'rollback', service: 'checkout', environment: 'prod')
 *   shipledgerDeploy(command: 'finish', status: currentBuild.currentResult)   // in post { always }
 *   shipledgerDeploy(command: 'gate', service: 'checkout', environment: 'prod', changeId: 'CHG0042')
 *
 * Arguments: command (start | run | emit | finish | gate; default run), run (shell line),
 * eventType, status, service, environment, kind, version, changeId, emergencyReason (gate:
 * break-glass), args (more shipledger options). The gate needs SHIPLEDGER_API_URL and
 * SHIPLEDGER_API_TOKEN (withCredentials) and fails the stage when the deployment is blocked.
 * Commit, actor, build URL and stage are detected from Jenkins' variables.
 */
def call(Map args = [:]) {
    String command = args.command ?: 'run'
    Map<String, Object> inputs = [
        SHIPLEDGER_STEP_COMMAND: command,
        SHIPLEDGER_STEP_RUN: args.run,
        SHIPLEDGER_STEP_EVENT: args.eventType,
        SHIPLEDGER_STEP_STATUS: args.status,
        SHIPLEDGER_STEP_ARGS: args.args,
        SHIPLEDGER_SERVICE: args.service,
        SHIPLEDGER_ENVIRONMENT: args.environment,
        SHIPLEDGER_KIND: args.kind,
        SHIPLEDGER_VERSION: args.version,
        SHIPLEDGER_CHANGE_ID: args.changeId,
        SHIPLEDGER_EMERGENCY_REASON: args.emergencyReason,
        SHIPLEDGER_STEP_SCRIPT: env.SHIPLEDGER_STEP_SCRIPT ?: '.shipledger/shipledger-step.sh',
    ]
    List<String> vars = inputs.findAll { it.value != null }.collect { "${it.key}=${it.value}" }
    withEnv(vars) {
        // Single quotes: the shell expands the variables, Groovy does not interpolate them.
        sh 'if [ ! -f "$SHIPLEDGER_STEP_SCRIPT" ]; then mkdir -p "$(dirname "$SHIPLEDGER_STEP_SCRIPT")" && curl -fsSL "$SHIPLEDGER_STEP_URL" -o "$SHIPLEDGER_STEP_SCRIPT"; fi'
        if (command == 'start') {
            String id = sh(script: 'sh "$SHIPLEDGER_STEP_SCRIPT" start', returnStdout: true).trim()
            env.SHIPLEDGER_DEPLOYMENT_ID = id  // every later stage of this build reports it
            return id
        }
        // A failing command fails this step (and the stage) with its exit code.
        sh 'sh "$SHIPLEDGER_STEP_SCRIPT" "$SHIPLEDGER_STEP_COMMAND"'
    }
}
