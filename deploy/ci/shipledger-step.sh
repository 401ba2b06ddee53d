#!/bin/sh
# shipledger-step.sh: the one script behind the GitHub Actions, GitLab CI and Jenkins templates
# (deploy/ci/README.md). POSIX sh; needs `shipledger` on the runner (README: Install).
#
#   shipledger-step.sh start           print this pipeline's deployment id: SHIPLEDGER_DEPLOYMENT_ID
#                                      if set, else a new one; also handed to the next jobs via
#                                      $GITHUB_OUTPUT (deployment-id), $GITHUB_ENV and the dotenv
#                                      file $SHIPLEDGER_DOTENV (GitLab `artifacts:reports:dotenv`)
#   shipledger-step.sh run [LINE]      run the shell LINE (default $SHIPLEDGER_STEP_RUN) under
#                                      `shipledger run`: `started`, then `succeeded` or `failed`
#                                      (exit code, duration); exits with LINE's exit code
#   shipledger-step.sh emit [TYPE]     emit one event (default $SHIPLEDGER_STEP_EVENT)
#   shipledger-step.sh finish [STATUS] report a pipeline's outcome from the CI's own status word
#                                      (default $SHIPLEDGER_STEP_STATUS): success/SUCCESS ->
#                                      succeeded, failure/failed/FAILURE/UNSTABLE -> failed,
#                                      cancelled/canceled/ABORTED/NOT_BUILT -> cancelled
#   shipledger-step.sh gate            ask the pre-deploy gate before deploying (`shipledger gate`;
#                                      needs SHIPLEDGER_API_URL and SHIPLEDGER_API_TOKEN): exits 0
#                                      allowed, 1 blocked (every reason printed), 3 no answer
#                                      (SHIPLEDGER_GATE_UNREACHABLE=pass goes ahead instead);
#                                      with SHIPLEDGER_EMERGENCY_REASON set: break-glass (passes,
#                                      recorded, critical alert)
#
# Event fields come from SHIPLEDGER_* variables (SHIPLEDGER_SERVICE, _ENVIRONMENT, _KIND:
# release, rollback, emergency_patch...; see `shipledger emit --help`) and from the CI's own
# variables (commit, actor, run URL, stage). SHIPLEDGER_STEP_ARGS: more `shipledger` options,
# split on blanks. SHIPLEDGER_BIN: the shipledger executable (default: shipledger).
# After each step, events spooled while Kafka was unreachable are flushed, best effort.
set -u

# CI templates pass every input, set or not: an empty SHIPLEDGER_X means "not given".
for name in $(env | sed -n 's/^\(SHIPLEDGER_[A-Z0-9_]*\)=$/\1/p'); do
    unset "$name"
done

sl=${SHIPLEDGER_BIN:-shipledger}

die() {
    echo "shipledger-step: $*" >&2
    exit 2
}

# `shipledger ARGS`, then a best-effort flush; exits with the first one's code.
then_flush() {
    "$sl" "$@"
    code=$?
    "$sl" flush >&2 || echo "shipledger-step: some events stay spooled (see above)" >&2
    exit "$code"
}

[ $# -ge 1 ] || die "usage: shipledger-step.sh start|run|emit|finish|gate [...] (see the script's header)"
command=$1
shift
operand=
case ${1:-} in
-*) ;;
*) if [ $# -ge 1 ]; then operand=$1 && shift; fi ;;
esac
set -f # SHIPLEDGER_STEP_ARGS is split on blanks, never globbed
# shellcheck disable=SC2086
set -- "$@" ${SHIPLEDGER_STEP_ARGS:-}
set +f

case $command in
start)
    id=${SHIPLEDGER_DEPLOYMENT_ID:-}
    if [ -z "$id" ]; then
        id=$("$sl" start) || die "shipledger start failed"
    fi
    if [ -n "${GITHUB_OUTPUT:-}" ]; then echo "deployment-id=$id" >>"$GITHUB_OUTPUT"; fi
    if [ -n "${GITHUB_ENV:-}" ]; then echo "SHIPLEDGER_DEPLOYMENT_ID=$id" >>"$GITHUB_ENV"; fi
    if [ -n "${SHIPLEDGER_DOTENV:-}" ]; then echo "SHIPLEDGER_DEPLOYMENT_ID=$id" >"$SHIPLEDGER_DOTENV"; fi
    echo "$id"
    ;;
run)
    line=${operand:-${SHIPLEDGER_STEP_RUN:-}}
    [ -n "$line" ] || die "run: no command line (give it, or set SHIPLEDGER_STEP_RUN)"
    then_flush run "$@" -- sh -c "$line"
    ;;
emit)
    event=${operand:-${SHIPLEDGER_STEP_EVENT:-}}
    [ -n "$event" ] || die "emit: no event type (give it, or set SHIPLEDGER_STEP_EVENT)"
    then_flush emit "$event" "$@"
    ;;
finish)
    status=${operand:-${SHIPLEDGER_STEP_STATUS:-}}
    case $status in
    success | succeeded | SUCCESS) event=succeeded ;;
    failure | failed | FAILURE | UNSTABLE) event=failed ;;
    cancelled | canceled | ABORTED | NOT_BUILT) event=cancelled ;;
    *) die "finish: unknown status '$status' (expected success, failure or cancelled)" ;;
    esac
    then_flush emit "$event" --attr "ci_status=$status" "$@"
    ;;
gate)
    if [ -n "${SHIPLEDGER_EMERGENCY_REASON:-}" ]; then
        set -- "$@" --emergency --reason "$SHIPLEDGER_EMERGENCY_REASON"
    fi
    "$sl" gate "$@"
    code=$?
    if [ "$code" -eq 3 ] && [ "${SHIPLEDGER_GATE_UNREACHABLE:-fail}" = pass ]; then
        echo "shipledger-step: the gate did not answer; going ahead (SHIPLEDGER_GATE_UNREACHABLE=pass)" >&2
        exit 0
    fi
    exit "$code"
    ;;
*) die "unknown command '$command' (expected start, run, emit, finish or gate)" ;;
esac
