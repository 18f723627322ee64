"""The long-running commands, `gpuheal worker` and `gpuheal agent`, each loaded only when it runs.

They take their flags' defaults from the settings of the process they start, so defining them
imports that process's code. `gpuheal` finds them in the `gpuheal.commands` entry point group, as it
finds the test bed's `demo`, so `gpuheal list` or `gpuheal approve` starts without loading either.
"""
