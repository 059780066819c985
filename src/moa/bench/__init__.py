"""Benchmarks of the engine itself, one module per benchmark (each also a ``moa bench`` command)."""
