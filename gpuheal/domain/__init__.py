"""Pure types and rules: faults, actions, the XID catalog, phases, policies and step payloads.

Nothing here performs I/O, so workflows may import all of it.
"""
