"""`shipledger import`: a team's past deployments into the ledger (docs/import.md).

Pure parts: `mapping` (what every provider's rows share: stable ids, times, refusals) and one
module per provider export (`four_keys`, `devlake`, `github`): rows in, shipledger event
objects out, each with a deterministic `event_id` so that importing a file again adds
nothing. `reading` turns a file into records (NDJSON and CSV through the upload parser of the
ingest API); `judging` runs each deployment event through the processors' pure chain
(`processors.step.process`) and builds the ledger's rows; `run` writes them through the sink's
writer (`sinks.writer.LedgerWriter`: dedup by id, hash chains, retention stamps) in large
batches; `cli` is the command.
"""
