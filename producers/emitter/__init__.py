"""The CI emitter: `shipledger start/emit/run/flush`, CI metadata, the spool."""
