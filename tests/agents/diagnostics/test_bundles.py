"""Diagnostics bundles: collected by nvidia-bug-report.sh (a stand-in script, run as a real process) or
an NVML probe (the fake NVML), kept in a directory or in an S3 bucket (moto's server, through boto3)."""

from __future__ import annotations

import asyncio
import gzip
import json
import stat
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import boto3
import pytest
from moto.server import ThreadedMotoServer

from gpuheal.agents.diagnostics import (
    BugReportCollector,
    CollectError,
    DirectoryStore,
    NvmlProbe,
    S3Store,
    StoreError,
    destination,
)
from gpuheal_sim.fake_nvml import FakeNvml

BUCKET = "gpuheal-bundles"


def bug_report_script(tmp_path: Path, *, writes: bool = True, exit_code: int = 0) -> Path:
    """An nvidia-bug-report.sh that, as the real one, writes `<--output-file>.gz`."""
    script = tmp_path / "nvidia-bug-report.sh"
    body = (
        'printf "nvidia-bug-report of %s" "$(hostname)" | gzip > "$2.gz"\n'
        if writes
        else "echo 'lspci: not found' >&2\n"
    )
    script.write_text(f"#!/bin/sh\n{body}exit {exit_code}\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


async def test_the_bug_report_is_collected_where_the_script_writes_it(tmp_path: Path) -> None:
    into = tmp_path / "scratch"
    into.mkdir()
    bundle = await BugReportCollector(str(bug_report_script(tmp_path))).collect(into, "gpu-node-1", "XID 79")

    assert (bundle.path, bundle.tool) == (into / "nvidia-bug-report.log.gz", "nvidia-bug-report.sh")
    assert gzip.decompress(bundle.path.read_bytes()).startswith(b"nvidia-bug-report of ")


async def test_a_bug_report_that_writes_nothing_or_cannot_run_is_a_collect_error(tmp_path: Path) -> None:
    script = bug_report_script(tmp_path, writes=False, exit_code=1)
    with pytest.raises(CollectError, match=r"\(exit 1\) wrote no nvidia-bug-report.log.gz: lspci: not found"):
        await BugReportCollector(str(script)).collect(tmp_path, "n", "")
    with pytest.raises(CollectError, match="cannot run"):
        await BugReportCollector(str(tmp_path / "absent.sh"), timeout=timedelta(seconds=5)).collect(tmp_path, "n", "")


async def test_the_nvml_probe_holds_every_gpu_lost_ones_included(tmp_path: Path) -> None:
    nvml = FakeNvml("gpu-node-1", 2)
    nvml.init()
    nvml.set_ecc_dbe(0, 2)
    nvml.fail_device(1)

    bundle = await NvmlProbe(nvml).collect(tmp_path, "gpu-node-1", "XID 79 on GPU 1")

    probe = json.loads(gzip.decompress(bundle.path.read_bytes()))
    assert (probe["node"], probe["reason"], bundle.tool) == ("gpu-node-1", "XID 79 on GPU 1", "nvml")
    first, second = probe["gpus"]
    assert first["uuid"] == nvml.device_info(0).uuid and first["signals"]["ecc_dbe_volatile"] == 2
    assert "lost" in second


async def test_a_directory_keeps_each_bundle_whole_and_private(tmp_path: Path) -> None:
    source = tmp_path / "bundle.gz"
    source.write_bytes(b"\x1f\x8b bundle")
    store = destination(str(tmp_path / "kept"))
    assert isinstance(store, DirectoryStore)

    where = await store.put(source, "gpu-node-1/20261206T230000Z-run-1-bundle.gz")

    kept = Path(where)
    assert kept == tmp_path / "kept" / "gpu-node-1" / "20261206T230000Z-run-1-bundle.gz"
    assert kept.read_bytes() == b"\x1f\x8b bundle" and stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert [p.name for p in kept.parent.iterdir()] == [kept.name], "no partial file left behind"
    blocked = tmp_path / "file-not-dir"
    blocked.write_text("")
    with pytest.raises(StoreError, match=f"cannot write {blocked}/n/b"):
        await DirectoryStore(blocked).put(source, "n/b")


@pytest.fixture(scope="module")
def s3_url() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3(s3_url: str, monkeypatch: pytest.MonkeyPatch) -> object:
    """A bucket on moto's S3, and the standard variables under which boto3 reaches it."""
    for name, value in {
        "AWS_ENDPOINT_URL_S3": s3_url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    client = boto3.client("s3")
    if BUCKET not in [b["Name"] for b in client.list_buckets()["Buckets"]]:
        client.create_bucket(Bucket=BUCKET)
    return client


async def test_a_bucket_keeps_the_bundle_under_its_prefix(tmp_path: Path, s3: object) -> None:
    source = tmp_path / "bundle.gz"
    source.write_bytes(b"bundle bytes")
    store = destination(f"s3://{BUCKET}/fleet-a/")
    assert isinstance(store, S3Store)

    where = await store.put(source, "gpu-node-1/run-1-bundle.gz")

    assert where == f"s3://{BUCKET}/fleet-a/gpu-node-1/run-1-bundle.gz"
    got = await asyncio.to_thread(
        boto3.client("s3").get_object, Bucket=BUCKET, Key="fleet-a/gpu-node-1/run-1-bundle.gz"
    )
    assert got["Body"].read() == b"bundle bytes"


async def test_a_missing_bucket_is_a_store_error_naming_it(tmp_path: Path, s3: object) -> None:
    source = tmp_path / "bundle.gz"
    source.write_bytes(b"x")
    with pytest.raises(StoreError, match=r"cannot store s3://no-such-bucket/n/b: .*NoSuchBucket"):
        await S3Store("no-such-bucket").put(source, "n/b")


def test_an_s3_address_without_a_bucket_is_refused() -> None:
    with pytest.raises(ValueError, match="names no bucket"):
        destination("s3:///prefix")
