"""Benchmarks that print their figures and the command that produced them (`python -m bench.NAME`)."""
