"""Edges that put deployment events into Kafka: the CI emitter (`shipledger emit/run/flush`),
its publisher and its local spool."""
