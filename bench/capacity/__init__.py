"""bench.capacity: how many admissions per second one router sustains with simulated engines
(`python -m bench.capacity [--quick]`); see bench/capacity/run.py."""
