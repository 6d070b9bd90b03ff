"""`python -m bench.adapt`: online learning of a mismatched model's output lengths through the live app."""
