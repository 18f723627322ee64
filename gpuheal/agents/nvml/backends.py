"""NVML backends by name, found in the `gpuheal.nvml` entry point group.

gpuheal registers the driver's NVML as "real"; the test bed (gpuheal-sim) registers an in-memory
"fake" that `gpuheal agent --fake-gpus N` runs on. The agent never imports a backend it does not run.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Protocol

from gpuheal.agents.nvml.interface import Nvml
from gpuheal.agents.nvml.real import RealNvml

NVML_GROUP = "gpuheal.nvml"


class NvmlBackend(Protocol):
    """Opens a backend for `node`; `gpus` is how many GPUs a simulated backend plays (None: the real ones)."""

    def __call__(self, node: str, gpus: int | None) -> Nvml: ...


class UnknownNvmlBackend(LookupError):
    """No installed distribution registers a backend of that name."""


def open_nvml(name: str, node: str, gpus: int | None) -> Nvml:
    """The backend registered as `name`, opened for `node`. Raises UnknownNvmlBackend naming the choices."""
    registered = {entry.name: entry for entry in entry_points(group=NVML_GROUP)}
    if name not in registered:
        raise UnknownNvmlBackend(
            f"no NVML backend {name!r} is installed (installed: {', '.join(registered) or 'none'}); "
            "the fake one comes with gpuheal-sim"
        )
    backend: NvmlBackend = registered[name].load()
    return backend(node, gpus)


def real(node: str, gpus: int | None) -> Nvml:
    """The driver's NVML, through nvidia-ml-py; it finds the node's GPUs itself."""
    return RealNvml()
