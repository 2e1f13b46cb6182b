"""Which sampler finds the best score: see run.py."""
