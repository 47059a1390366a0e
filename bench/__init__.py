"""Benchmarks of the Starling peer, run against real processes (``make bench``)."""
