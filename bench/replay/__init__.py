"""Live trace replay of FCFS vs SSJF vs SJF-oracle against the real Serve app: `python -m bench.replay`."""
