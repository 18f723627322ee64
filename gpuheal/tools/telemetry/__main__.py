"""`python -m gpuheal.tools.telemetry`: the same as `gpuheal-telemetry`."""

from gpuheal.tools.telemetry import main

main()
