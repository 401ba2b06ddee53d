"""Sinks: consumers that write shipledger's topics to durable stores (ClickHouse first)."""
