"""Benchmarks that print figures (`make bench`). They are measurements, not tests."""
