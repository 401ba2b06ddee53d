"""Where the rows are: DDL, migrations, the store, hot and cold tiers, read queries, audit,
grants, archive."""
