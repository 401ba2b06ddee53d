"""Benchmarks, the demo and realistic traffic: tools around the product, never imported by it."""
