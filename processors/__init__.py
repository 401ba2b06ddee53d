"""Stream processors: normalize, correlate and judge deployment events (pure logic + Faust app)."""
