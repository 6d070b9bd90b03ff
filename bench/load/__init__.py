"""Load test: mixed valid, invalid and disconnecting traffic against the app: `python -m bench.load`."""
