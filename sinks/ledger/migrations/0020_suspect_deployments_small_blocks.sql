-- 0020_suspect_deployments_small_blocks.sql: suspect_deployments rebuilt with compressed blocks
-- of 4-16 KiB (were the server's 64 KiB-1 MiB): reading one of an incident's 128-row granules
-- decompresses the whole block holding it, so an incident read 4.6x the compressed bytes it
-- needed (docs/triage.md). Written by hand, as 0019: the table is copied (every row kept) and
-- swapped, its view dropped before the copy and made again after the swap.

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
SETTINGS index_granularity = 128, min_compress_block_size = 4096,
    max_compress_block_size = 16384
COMMENT 'Deployment records by service and start, for incident triage (maintained by suspect_deployments_mv; docs/triage.md).';

-- One partition a month: a ledger (an imported history) can hold more than the 100 one insert
-- may write.
INSERT INTO `suspect_deployments__rebuild` SELECT * FROM `suspect_deployments`
SETTINGS max_partitions_per_insert_block = 0;

EXCHANGE TABLES `suspect_deployments__rebuild` AND `suspect_deployments`;

DROP TABLE `suspect_deployments__rebuild`;

CREATE MATERIALIZED VIEW `suspect_deployments_mv` TO `suspect_deployments` AS
SELECT tenant, service, started_at, deployment_id, seq, environment, status,
    commit_sha, version, team, rollback_of, retain_until
FROM `deployment_records`;
