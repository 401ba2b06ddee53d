"""The contract: Avro schemas, their registry and codec, and the pydantic models mirroring them."""
