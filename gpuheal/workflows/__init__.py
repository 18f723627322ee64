"""Deterministic workflow code: decisions and durable waits only. All I/O lives in activities."""
