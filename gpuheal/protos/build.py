"""Generate the Python for the `.proto` contracts: `python -m gpuheal.protos.build` (or `make protos`).

grpcio-tools writes the messages (`*_pb2.py`) and the service stubs (`*_pb2_grpc.py`); mypy-protobuf
writes their type stubs (`.pyi`). The generated files are committed, and a test regenerates them
into a temporary directory and fails when they differ, so a `.proto` change cannot go stale.
"""

from __future__ import annotations

import sysconfig
from importlib import resources
from pathlib import Path

PROTOS = ("health_event.proto", "gpu.proto", "telemetry.proto")
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent


def generate(out_dir: Path) -> list[Path]:
    """Write the generated modules under `out_dir/gpuheal/protos/`; returns the files written."""
    from grpc_tools import protoc  # type: ignore[import-untyped]  # a development dependency

    scripts = Path(sysconfig.get_path("scripts"))
    well_known = resources.files("grpc_tools").joinpath("_proto")
    target = out_dir / "gpuheal" / "protos"
    target.mkdir(parents=True, exist_ok=True)
    args = [
        "grpc_tools.protoc",
        f"-I{ROOT}",
        f"-I{well_known}",
        f"--plugin=protoc-gen-mypy={scripts / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={scripts / 'protoc-gen-mypy_grpc'}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--mypy_out={out_dir}",
        f"--mypy_grpc_out={out_dir}",
        *(str(HERE / name) for name in PROTOS),
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed for {', '.join(PROTOS)}")
    return sorted(p for p in target.iterdir() if p.name.endswith((".py", ".pyi")) and "_pb2" in p.name)


if __name__ == "__main__":
    written = generate(ROOT)
    print("\n".join(str(path.relative_to(ROOT)) for path in written))
