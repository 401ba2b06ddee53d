"""Reconciliation of the ledger against independent evidence of deployments (docs/reconcile.md):
Kubernetes audit logs, AWS CloudTrail, web access logs of deploy endpoints. Pure: the parsers,
the mapping of evidence to (tenant, service, environment) and the comparison; the ledger reads
their inputs and stores their findings (`sinks.ledger.reconciliations`)."""
