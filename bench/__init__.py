"""Benchmarks and measurements of the engine and the dashboard; never run by the tests."""
