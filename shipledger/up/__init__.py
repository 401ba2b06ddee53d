"""`shipledger up`: the embedded stack's supervisor (broker, worker, sink, API) and what it
restores after a crash."""
