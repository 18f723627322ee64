"""The benchmarks as pictures: the storm over time, and latency distributions, as PNG files.

Drawn with matplotlib's object API on a Figure of its own (no pyplot): nothing global is set, no
display is needed, and a benchmark may draw from any thread.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from bench.measure import percentile

_SIZE = (10.0, 5.5)
_DPI = 120


def counts_over_time(times: Sequence[float], at: Sequence[float]) -> list[int]:
    """How many of `times` are at or before each moment of `at`."""
    ordered = sorted(times)
    return [bisect.bisect_right(ordered, moment) for moment in at]


def storm(
    path: Path,
    *,
    cordoned: Sequence[float],
    back: Sequence[float],
    bare: Mapping[str, Sequence[float]],
    title: str,
) -> None:
    """The storm over time: nodes quarantined so far, in repair now and back in service so far, from
    each node's cordon and return to service (seconds since the first report), with the completions
    of each bare baseline (seconds since its first start) on the same axes."""
    moments = sorted({0.0, *cordoned, *back, *(t for times in bare.values() for t in times)})
    quarantined = counts_over_time(cordoned, moments)
    returned = counts_over_time(back, moments)
    figure = Figure(figsize=_SIZE, dpi=_DPI)
    axes = figure.subplots()
    in_repair = [q - r for q, r in zip(quarantined, returned, strict=True)]
    axes.step(moments, in_repair, where="post", label="in repair (cordoned, not back yet)", color="tab:orange")
    # Above the others: until the first node is back, in repair is the same line.
    axes.step(moments, quarantined, where="post", label="quarantined (cordoned so far)", color="tab:red", zorder=3)
    axes.step(moments, returned, where="post", label="back in service", color="tab:green")
    for (name, times), style in zip(bare.items(), (":", "--", "-."), strict=False):
        axes.step(moments, counts_over_time(times, moments), where="post", linestyle=style, color="black", label=name)
    axes.set_xlabel("seconds since the first report (bare: since the first start)")
    axes.set_ylabel("nodes (bare: workflows)")
    axes.set_xlim(left=0)
    axes.set_ylim(bottom=0)
    _finish(figure, axes, title, path)


def latency_distributions(
    path: Path, series: Mapping[str, Sequence[float]], *, title: str, xlabel: str = "latency (ms, log scale)"
) -> None:
    """Each series' latencies (in seconds) as a cumulative distribution on a log axis in milliseconds,
    its p50 and p99 in the legend: one PNG where several benchmarks' latencies can be compared."""
    figure = Figure(figsize=_SIZE, dpi=_DPI)
    axes = figure.subplots()
    for name, values in series.items():
        if not values:
            continue
        ordered = sorted(value * 1000 for value in values)
        fractions = [(rank + 1) / len(ordered) for rank in range(len(ordered))]
        p50, p99 = percentile(ordered, 0.5), percentile(ordered, 0.99)
        label = f"{name}: p50 {p50:.1f} ms, p99 {p99:.1f} ms, n={len(ordered)}"
        # A sample that never arrived (infinite) has no place on the axis; its share stays unreached.
        finite = [(value, fraction) for value, fraction in zip(ordered, fractions, strict=True) if math.isfinite(value)]
        if len(finite) < len(ordered):
            label += f", {len(ordered) - len(finite)} never"
        axes.step([value for value, _ in finite], [fraction for _, fraction in finite], where="post", label=label)
    axes.set_xscale("log")
    axes.set_xlabel(xlabel)
    axes.set_ylabel("fraction at or below")
    axes.set_ylim(0, 1.01)
    _finish(figure, axes, title, path)


def _finish(figure: Figure, axes: Axes, title: str, path: Path) -> None:
    axes.set_title(title)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(loc="best", fontsize="small")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
