-- 0022_suspect_inputs.sql: incident triage reads the change sets and verdicts of an incident's
-- candidates beside them, in the new suspect_inputs (laid out as suspect_deployments: by
-- service and start), instead of looking each candidate's id up in deployment_change_sets (one
-- month partition after another) and deployment_verifications (docs/triage.md). Generated,
-- then the backfill written by hand: each change set and verdict stored before this migration
-- is filed beside every start its deployment's records have (suspect_deployments: archived
-- records too), so every record an incident's window finds sees its inputs, as the id lookup
-- did; a deployment without records is never a candidate and gets no row. From now on the
-- writers file each new row beside the record they computed it for (started_at,
-- retain_until: the new columns, 1970 on the rows before).

ALTER TABLE `deployment_change_sets` ADD COLUMN `started_at` DateTime64(3, 'UTC') COMMENT 'Start of the deployment record it was computed for (1970 on rows stored before 0022).' AFTER `complete`;

ALTER TABLE `deployment_change_sets` ADD COLUMN `retain_until` DateTime64(3, 'UTC') COMMENT 'That record\'s retain_until: its suspect_inputs row goes with it (TTL; 1970 on rows stored before 0022).' AFTER `started_at`;

ALTER TABLE `deployment_verifications` ADD COLUMN `started_at` DateTime64(3, 'UTC') COMMENT 'Start of the deployment record it was computed for (1970 on rows stored before 0022).' AFTER `team`;

ALTER TABLE `deployment_verifications` ADD COLUMN `retain_until` DateTime64(3, 'UTC') COMMENT 'That record\'s retain_until: its suspect_inputs row goes with it (TTL; 1970 on rows stored before 0022).' AFTER `started_at`;

CREATE TABLE `suspect_inputs`
(
    `tenant` LowCardinality(String) COMMENT 'Tenant.',
    `service` LowCardinality(String) COMMENT 'Service.',
    `started_at` DateTime64(3, 'UTC') COMMENT 'Start of the record the input was computed for.',
    `deployment_id` String COMMENT 'Deployment id.',
    `input` LowCardinality(String) COMMENT 'change_set or verdict.',
    `at` DateTime64(3, 'UTC') COMMENT 'computed_at or decided_at (the latest per deployment counts).',
    `commit_count` UInt32 COMMENT 'Commits in the change set (0 on a verdict).',
    `verdict` LowCardinality(String) COMMENT 'The verdict (\'\' on a change set).',
    `retain_until` DateTime64(3, 'UTC') COMMENT 'That record\'s retain_until: deleted with it (TTL).'
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(`started_at`)
ORDER BY (`tenant`, `service`, `started_at`, `deployment_id`)
TTL `retain_until` DELETE
SETTINGS index_granularity = 128, min_compress_block_size = 4096,
    max_compress_block_size = 16384
COMMENT 'Change sets and verdicts by service and start, for incident triage (maintained by suspect_change_sets_mv and suspect_verdicts_mv; docs/triage.md).';

CREATE MATERIALIZED VIEW `suspect_change_sets_mv` TO `suspect_inputs` AS
SELECT tenant, service, started_at, deployment_id, 'change_set' AS input,
    computed_at AS at, commit_count, '' AS verdict, retain_until
FROM `deployment_change_sets`;

CREATE MATERIALIZED VIEW `suspect_verdicts_mv` TO `suspect_inputs` AS
SELECT tenant, service, started_at, deployment_id, 'verdict' AS input,
    decided_at AS at, toUInt32(0) AS commit_count, verdict, retain_until
FROM `deployment_verifications`;


-- One partition a month: a ledger (an imported history) can hold more than the 100 one insert
-- may write.
INSERT INTO `suspect_inputs`
SELECT c.tenant, r.service, r.started_at, c.deployment_id, 'change_set' AS input,
    c.computed_at AS at, c.commit_count, '' AS verdict, r.retain_until
FROM `deployment_change_sets` AS c
INNER JOIN (SELECT tenant, deployment_id, service, started_at, max(retain_until) AS retain_until
    FROM `suspect_deployments` GROUP BY tenant, deployment_id, service, started_at) AS r
ON c.tenant = r.tenant AND c.deployment_id = r.deployment_id
SETTINGS max_partitions_per_insert_block = 0;

INSERT INTO `suspect_inputs`
SELECT v.tenant, r.service, r.started_at, v.deployment_id, 'verdict' AS input,
    v.decided_at AS at, toUInt32(0) AS commit_count, v.verdict, r.retain_until
FROM `deployment_verifications` AS v
INNER JOIN (SELECT tenant, deployment_id, service, started_at, max(retain_until) AS retain_until
    FROM `suspect_deployments` GROUP BY tenant, deployment_id, service, started_at) AS r
ON v.tenant = r.tenant AND v.deployment_id = r.deployment_id
SETTINGS max_partitions_per_insert_block = 0;
