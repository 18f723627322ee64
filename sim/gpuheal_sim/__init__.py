"""gpuheal's test bed, a distribution of its own (`gpuheal-sim`) so that the product ships none of it.

`simulator`: a simulated GPU fleet (Kubernetes API server, kubelets, clouds and BMCs), also run as the
`gpuheal-sim` console script; `provider`: the reboot provider that reboots its nodes; `fake_nvml`: an
in-memory NVML; `demo`: `gpuheal demo`. The product finds the provider, the fake NVML and the demo
command through entry points (`gpuheal.providers`, `gpuheal.nvml`, `gpuheal.commands`).
"""
