"""Discrete-event simulator over the same router/ code: `python -m bench.sim`, `python -m bench.sim.live`."""
