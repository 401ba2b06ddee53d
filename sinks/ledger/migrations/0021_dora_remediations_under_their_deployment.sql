-- 0021_dora_remediations_under_their_deployment.sql: a remediation's facts about the deployment
-- it names (rollback_of) are filed under that deployment's dora_deployments key (team,
-- environment, service, application, day), looked up in the new dora_deployment_keys, instead
-- of under the remediation's own: a team's report then reads its deployments' rows and not the
-- rows of the deployments its remediations name (docs/metrics.md). Written from the generated
-- file by hand: the view is dropped and made again (its SELECT changed), the keys are folded
-- from the hot records, then the hot remediation records again (every fact is a max or a min:
-- rows folded twice change nothing; rows filed under the remediation before stay, merged by
-- deployment id as before). A ledger that archived records runs
-- `shipledger migrate --rebuild-aggregates` once.

DROP VIEW `dora_deployments_mv`;

CREATE TABLE `dora_deployment_keys`
(
    `tenant` LowCardinality(String) COMMENT 'Tenant.',
    `deployment_id` String COMMENT 'Deployment.',
    `team` SimpleAggregateFunction(any, LowCardinality(String)) COMMENT 'Owner team (\'\' when unknown).',
    `environment` SimpleAggregateFunction(any, LowCardinality(String)) COMMENT 'Canonical environment.',
    `service` SimpleAggregateFunction(any, LowCardinality(String)) COMMENT 'Service.',
    `application` SimpleAggregateFunction(any, LowCardinality(String)) COMMENT 'Application (\'\' when unknown).',
    `day` SimpleAggregateFunction(min, Date) COMMENT 'UTC day it started.'
)
ENGINE = AggregatingMergeTree
ORDER BY (`tenant`, `deployment_id`)
SETTINGS index_granularity = 256
COMMENT 'Each deployment\'s dora_deployments key (maintained by dora_deployment_keys_mv; docs/metrics.md).';

CREATE MATERIALIZED VIEW `dora_deployment_keys_mv` TO `dora_deployment_keys` AS
SELECT tenant, deployment_id, ifNull(team, '') AS team, environment, service,
    ifNull(application, '') AS application, toDate(started_at) AS day
FROM `deployment_records`;

INSERT INTO `dora_deployment_keys`
SELECT tenant, deployment_id, ifNull(team, '') AS team, environment, service,
    ifNull(application, '') AS application, toDate(started_at) AS day
FROM `deployment_records`;

ALTER TABLE `dora_deployments` COMMENT COLUMN `deployment_id` 'The deployment the facts are about: the record\'s own, or the one a remediation names in rollback_of (a second row, filed under that deployment\'s team, environment, service, application and day when known at insert, else under the remediation\'s).';

CREATE MATERIALIZED VIEW `dora_deployments_mv` TO `dora_deployments` AS
SELECT tenant,
    if(role = 1 AND t_known = 1, t_team, ifNull(team, '')) AS team,
    if(role = 1 AND t_known = 1, t_environment, environment) AS environment,
    if(role = 1 AND t_known = 1, t_service, service) AS service,
    if(role = 1 AND t_known = 1, t_application, ifNull(application, '')) AS application,
    if(role = 1 AND t_known = 1, t_day, toDate(started_at)) AS day,
    if(role = 0, deployment_id, assumeNotNull(rollback_of)) AS deployment_id,
    toUInt8(role = 0) AS own, toUInt8(role = 0 AND NOT remedy) AS change,
    toUInt8(role = 0 AND remedy) AS remediation,
    if(role = 0 AND NOT remedy, toUInt64(seq) * 2 + (status IN ('failed', 'rolled_back')), 0) AS outcome,
    toUInt8(role = 1) AS remediated,
    multiIf(role = 1, started_at, role = 0 AND NOT remedy AND status = 'failed', ifNull(finished_at, updated_at), NULL) AS failed_at,
    multiIf(role = 1, if(status = 'succeeded', ifNull(finished_at, updated_at), NULL),
        role = 0 AND NOT remedy AND status = 'rolled_back', ifNull(finished_at, updated_at), NULL) AS restored_at,
    if(role = 0 AND NOT remedy AND status = 'succeeded', ifNull(finished_at, updated_at), NULL) AS deployed_at,
    if(role = 0 AND NOT remedy, commit_sha, '') AS commit_sha,
    if(role = 0 AND NOT remedy AND status = 'succeeded' AND commit_seen_at > 0
        AND commit_seen_at <= ifNull(finished_at, updated_at), commit_seen_at, NULL) AS seen_at
FROM (SELECT r.*, (r.kind IN ('rollback', 'hotfix', 'emergency_patch') OR r.rollback_of IS NOT NULL) AS remedy,
        c.first_seen_at AS commit_seen_at FROM `deployment_records` AS r
    LEFT JOIN (SELECT tenant, sha, min(first_seen_at) AS first_seen_at
        FROM `dora_commits`
        WHERE (tenant, sha) IN (SELECT tenant, commit_sha FROM `deployment_records`)
        GROUP BY tenant, sha) AS c
    ON r.tenant = c.tenant AND r.commit_sha = c.sha)
ARRAY JOIN if(remedy AND rollback_of IS NOT NULL, [0, 1], [0]) AS role
LEFT JOIN (SELECT tenant AS t_tenant, deployment_id AS t_id,
        any(team) AS t_team, any(environment) AS t_environment, any(service) AS t_service, any(application) AS t_application, min(day) AS t_day, 1 AS t_known
    FROM (SELECT tenant, deployment_id, team, environment, service, application, day
        FROM `dora_deployment_keys`
        WHERE (tenant, deployment_id) IN (SELECT tenant, assumeNotNull(rollback_of) FROM `deployment_records` WHERE rollback_of IS NOT NULL)
        UNION ALL SELECT tenant, deployment_id, ifNull(team, '') AS team, environment, service,
    ifNull(application, '') AS application, toDate(started_at) AS day FROM `deployment_records`
        WHERE (tenant, deployment_id) IN (SELECT tenant, assumeNotNull(rollback_of) FROM `deployment_records` WHERE rollback_of IS NOT NULL))
    GROUP BY tenant, deployment_id) AS t
ON tenant = t_tenant AND ifNull(rollback_of, '') = t_id;

INSERT INTO `dora_deployments`
SELECT tenant,
    if(role = 1 AND t_known = 1, t_team, ifNull(team, '')) AS team,
    if(role = 1 AND t_known = 1, t_environment, environment) AS environment,
    if(role = 1 AND t_known = 1, t_service, service) AS service,
    if(role = 1 AND t_known = 1, t_application, ifNull(application, '')) AS application,
    if(role = 1 AND t_known = 1, t_day, toDate(started_at)) AS day,
    if(role = 0, deployment_id, assumeNotNull(rollback_of)) AS deployment_id,
    toUInt8(role = 0) AS own, toUInt8(role = 0 AND NOT remedy) AS change,
    toUInt8(role = 0 AND remedy) AS remediation,
    if(role = 0 AND NOT remedy, toUInt64(seq) * 2 + (status IN ('failed', 'rolled_back')), 0) AS outcome,
    toUInt8(role = 1) AS remediated,
    multiIf(role = 1, started_at, role = 0 AND NOT remedy AND status = 'failed', ifNull(finished_at, updated_at), NULL) AS failed_at,
    multiIf(role = 1, if(status = 'succeeded', ifNull(finished_at, updated_at), NULL),
        role = 0 AND NOT remedy AND status = 'rolled_back', ifNull(finished_at, updated_at), NULL) AS restored_at,
    if(role = 0 AND NOT remedy AND status = 'succeeded', ifNull(finished_at, updated_at), NULL) AS deployed_at,
    if(role = 0 AND NOT remedy, commit_sha, '') AS commit_sha,
    if(role = 0 AND NOT remedy AND status = 'succeeded' AND commit_seen_at > 0
        AND commit_seen_at <= ifNull(finished_at, updated_at), commit_seen_at, NULL) AS seen_at
FROM (SELECT r.*, (r.kind IN ('rollback', 'hotfix', 'emergency_patch') OR r.rollback_of IS NOT NULL) AS remedy,
        c.first_seen_at AS commit_seen_at FROM (SELECT * FROM `deployment_records` WHERE rollback_of IS NOT NULL) AS r
    LEFT JOIN (SELECT tenant, sha, min(first_seen_at) AS first_seen_at
        FROM `dora_commits`
        WHERE (tenant, sha) IN (SELECT tenant, commit_sha FROM (SELECT * FROM `deployment_records` WHERE rollback_of IS NOT NULL))
        GROUP BY tenant, sha) AS c
    ON r.tenant = c.tenant AND r.commit_sha = c.sha)
ARRAY JOIN if(remedy AND rollback_of IS NOT NULL, [0, 1], [0]) AS role
LEFT JOIN (SELECT tenant AS t_tenant, deployment_id AS t_id,
        any(team) AS t_team, any(environment) AS t_environment, any(service) AS t_service, any(application) AS t_application, min(day) AS t_day, 1 AS t_known
    FROM (SELECT tenant, deployment_id, team, environment, service, application, day
        FROM `dora_deployment_keys`
        WHERE (tenant, deployment_id) IN (SELECT tenant, assumeNotNull(rollback_of) FROM (SELECT * FROM `deployment_records` WHERE rollback_of IS NOT NULL) WHERE rollback_of IS NOT NULL)
        UNION ALL SELECT tenant, deployment_id, ifNull(team, '') AS team, environment, service,
    ifNull(application, '') AS application, toDate(started_at) AS day FROM (SELECT * FROM `deployment_records` WHERE rollback_of IS NOT NULL)
        WHERE (tenant, deployment_id) IN (SELECT tenant, assumeNotNull(rollback_of) FROM (SELECT * FROM `deployment_records` WHERE rollback_of IS NOT NULL) WHERE rollback_of IS NOT NULL))
    GROUP BY tenant, deployment_id) AS t
ON tenant = t_tenant AND ifNull(rollback_of, '') = t_id;
