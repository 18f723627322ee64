"""The per-node agent: device API, health event intake, monitors and the publisher (issue 4)."""
