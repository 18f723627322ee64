"""Kernel log parser throughput, beside a plain read of the same file.

Builds a mixed log (mostly ordinary kernel noise, a few percent NVIDIA lines: XIDs in every
wrapping, SXids, fallen-off-the-bus reports, resets and harmless NVRM chatter), then times reading it
line by line with and without `KmsgParser.feed` on each line. The ratio is what parsing costs over
reading: the figure that tells whether the monitor keeps up with a kernel that floods its log.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

from gpuheal.agents.kmsg.parser import KmsgParser

_NOISE = [
    "usb 1-1: new high-speed USB device number {n} using xhci_hcd",
    "EXT4-fs (nvme0n1p{d}): mounted filesystem with ordered data mode. Quota mode: none.",
    "IPv6: ADDRCONF(NETDEV_CHANGE): eth{d}: link becomes ready",
    'audit: type=1400 audit({n}.123:{d}): apparmor="STATUS" operation="profile_load" name="nvidia_modprobe"',
    "cgroup: fork rejected by pids controller in /kubepods/burstable/pod{n}",
    "mlx5_core 0000:{b}:00.0: mlx5_pcie_event:301:(pid {n}): PCIe slot advertised sufficient power (75W).",
    "kauditd_printk_skb: {d} callbacks suppressed",
    "nvme nvme{d}: 32/0/0 default/read/poll queues",
    "br-{n}: port {d}(veth{n}) entered forwarding state",
    "TCP: request_sock_TCP: Possible SYN flooding on port {n}. Sending cookies.",
    "oom_reaper: reaped process {n} (python3), now anon-rss:0kB, file-rss:0kB, shmem-rss:0kB",
    "nvidia-peermem nv_get_p2p_free_callback:127 ERROR detected invalid context, skipping further processing",
]
_NVIDIA = [
    "NVRM: Xid (PCI:0000:{b}:00): 13, pid={n}, name=python3, Graphics SM Warp Exception on (GPC 7, TPC 7, SM 0)",
    "NVRM: Xid (PCI:0000:{b}:00): 31, pid='<unknown>', name=<unknown>, Ch 00000008, intr 10000000. MMU Fault",
    "NVRM: Xid (PCI:0000:{b}:00): 48, pid='<unknown>', name=<unknown>, An uncorrectable double bit error",
    "NVRM: NVRM: Xid (PCI:0001:00:00.0): 79, GPU has fallen off the bus",
    "NVRM: Xid (PCI:0000:{b}:00): 154, pid=1, name=x, GPU recovery action changed from 0x0 (None) to 0x1 (GPU Reset Required)",
    "NVRM: GPU at PCI:0000:{b}:00: GPU-6b3a1c3e-0b0e-4f7e-9a43-1c2d3e4f5a{b}",
    "NVRM: GPU 0000:{b}:00.0: GPU has fallen off the bus.",
    "nvidia-nvswitch{d}: SXid (PCI:0000:{b}:00.0): 12028, Non-fatal, Link {d} egress non-posted PRIV error (First)",
    "nvidia-nvswitch{d}: SXid (PCI:0000:{b}:00.0): 20034, Fatal, Link {d} LTSSM Fault Up",
    "NVRM: loading NVIDIA UNIX x86_64 Kernel Module  550.54.15  Tue Mar  5 22:23:56 UTC 2024",
    "NVRM: GPU 0000:{b}:00.0: GPU reset complete",
]
_WRAPPINGS = [
    "{pri},{n},{usec},-;{text}",
    "[{sec:>5}.{frac:06d}] {text}",
    "[Mon Nov 23 02:07:01 2026] {text}",
    "Nov 23 02:07:01 gpu-node-7 kernel: [{sec:>5}.{frac:06d}] {text}",
    "Nov 23 02:07:01 gpu-node-7 kernel: {text}",
]


def build_log(
    path: Path, lines: int = 500_000, nvidia_share: float = 0.03, seed: int = 7, wrappings: list[str] = _WRAPPINGS
) -> int:
    """Write a mixed kernel log of `lines` lines, each in one of `wrappings`; returns how many of them
    are NVIDIA lines."""
    rng = random.Random(seed)
    nvidia = 0
    with path.open("w", encoding="utf-8") as log:
        for n in range(lines):
            is_nvidia = rng.random() < nvidia_share
            nvidia += is_nvidia
            template = rng.choice(_NVIDIA if is_nvidia else _NOISE)
            text = template.format(n=n, d=n % 8, b=f"{rng.choice((0x3B, 0x5D, 0x86, 0xDB)):02x}")
            wrapping = rng.choice(wrappings)
            log.write(
                wrapping.format(pri=rng.choice((3, 4, 6)), n=n, usec=n * 997, sec=n // 100, frac=n % 10**6, text=text)
            )
            log.write("\n")
    return nvidia


def _time_read(path: Path) -> float:
    start = time.perf_counter()
    with path.open(encoding="utf-8", errors="replace") as log:
        for _line in log:
            pass
    return time.perf_counter() - start


def time_parse(path: Path) -> tuple[float, int]:
    parser = KmsgParser()
    events = 0
    start = time.perf_counter()
    with path.open(encoding="utf-8", errors="replace") as log:
        for line in log:
            if parser.feed(line) is not None:
                events += 1
    return time.perf_counter() - start, events


def run(path: Path | None = None, lines: int = 500_000, repeats: int = 3) -> dict[str, float]:
    """Build the log (at `path`, or in a temporary file), time both passes (best of `repeats`), print."""
    with tempfile.TemporaryDirectory() as scratch:
        log = path or Path(scratch) / "kern.log"
        nvidia = build_log(log, lines)
        read = min(_time_read(log) for _ in range(repeats))
        parses = [time_parse(log) for _ in range(repeats)]
        parse = min(seconds for seconds, _ in parses)
        events = parses[0][1]
        size = log.stat().st_size
    figures = {
        "lines": float(lines),
        "nvidia_lines": float(nvidia),
        "events": float(events),
        "megabytes": size / 1e6,
        "read_lines_per_s": lines / read,
        "parse_lines_per_s": lines / parse,
        "parse_over_read": parse / read,
    }
    print(f"kmsg parser: {lines:,} lines ({size / 1e6:.1f} MB, {nvidia:,} NVIDIA lines, {events:,} events)")
    print(f"  plain read  {figures['read_lines_per_s']:>13,.0f} lines/s")
    print(
        f"  read+parse  {figures['parse_lines_per_s']:>13,.0f} lines/s   ({figures['parse_over_read']:.2f}x the read time)"
    )
    return figures


if __name__ == "__main__":
    options = argparse.ArgumentParser(prog="python -m bench.kmsg")
    options.add_argument("--lines", type=int, default=500_000)
    options.add_argument("--path", type=Path, help="where to write the generated log (default: a temporary file)")
    arguments = options.parse_args()
    run(arguments.path, arguments.lines)
