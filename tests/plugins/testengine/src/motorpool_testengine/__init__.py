"""motorpool's test engine: small, deterministic, pure-Python engines behind every hook."""
