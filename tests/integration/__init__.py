"""Integration tests: real broker (Tansu) and ClickHouse (chDB), marked `integration`."""
