"""Temporal client operations for operators and detectors: connect, report faults, decide, inspect."""
