-- 0019_suspect_deployments_small_granules.sql: suspect_deployments rebuilt with index_granularity
-- 128 (was 1024): an incident's candidates are a few dozen rows per service and part, and
-- 1024-row granules read 1.8x the rows and time (docs/triage.md). Written by hand: ClickHouse
-- cannot change a table's index_granularity in place, so the table is copied (every row kept,
-- archived records' rows included) and swapped. Its view is dropped before the copy and made
-- again after the swap: no record inserted meanwhile is missed (the sink migrates before it
-- writes), and the view surely feeds the new table.

DROP VIEW `suspect_deployments_mv`;

CREATE TABLE `suspect_deployments__rebuild`
(
    `tenant` LowCardinality(String) COMMENT 'Tenant.',
    `service` LowCardinality(String) COMMENT 'Service.',
    `started_at` DateTime64(3, 'UTC') COMMENT 'When the deployment started.',
    `deployment_id` String COMMENT 'Deployment id.',
    `seq` Int32 COMMENT 'Record version (the highest is the latest).',
    `environment` LowCardinality(String) COMMENT 'Canonical environment.',
    `status` LowCardinality(String) COMMENT 'Lifecycle status after this record.',
    `commit_sha` String COMMENT 'Commit SHA.',
    `version` Nullable(String) COMMENT 'Version or tag.',
    `team` LowCardinality(Nullable(String)) COMMENT 'Owner team.',
    `rollback_of` Nullable(String) COMMENT 'Deployment this one rolled back.',
    `retain_until` DateTime64(3, 'UTC') COMMENT 'The record\'s retain_until: deleted with it (TTL).'
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(`started_at`)
ORDER BY (`tenant`, `service`, `started_at`, `deployment_id`)
TTL `retain_until` DELETE
SETTINGS index_granularity = 128
COMMENT 'Deployment records by service and start, for incident triage (maintained by suspect_deployments_mv; docs/triage.md).';

INSERT INTO `suspect_deployments__rebuild` SELECT * FROM `suspect_deployments`;

EXCHANGE TABLES `suspect_deployments__rebuild` AND `suspect_deployments`;

DROP TABLE `suspect_deployments__rebuild`;

CREATE MATERIALIZED VIEW `suspect_deployments_mv` TO `suspect_deployments` AS
SELECT tenant, service, started_at, deployment_id, seq, environment, status,
    commit_sha, version, team, rollback_of, retain_until
FROM `deployment_records`;
