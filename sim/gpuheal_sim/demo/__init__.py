"""`gpuheal demo`: the whole system on one machine, with an embedded Temporal and a simulated fleet."""
