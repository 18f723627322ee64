"""The tools operators run to prove gpuheal on their own clusters (load, faults, telemetry).

Each keeps the interface its documentation promises (flags in Go's single-dash form as well as
double-dash, the same environment variables), so existing manifests and scripts work unchanged.
"""
