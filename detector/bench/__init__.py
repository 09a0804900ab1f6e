"""Benchmarks behind ``detector bench``: medians of repeated runs, ratios from one run."""
