"""The DCGM exporter's CSV, read row by row into `Row`s.

Columns are found by their header name, in any order: `timestamp`, `metric_name`, `gpu_id`,
`device`, `uuid`, `modelName`, `Hostname` and `value` are required (a header without one of them
is refused, naming every one missing), `container`, `pod`, `namespace` and `labels_raw` are read
where present. Fields are parsed by the stdlib `csv` module, so quoted fields, and `labels_raw`
values with embedded quotes and commas as the exporter writes them, come out whole.

The file is read as UTF-8, a byte-order mark before the header ignored; a header naming a column twice
is refused. A malformed row (text the `csv` module cannot read, such as a field over its 128 KiB limit
or a quote never closed, a field count other than the header's, a `gpu_id` or `value` that is not a
number, a timestamp that is not ISO 8601, an empty UUID, metric name or hostname) is skipped:
`on_malformed` is told why, and reading goes on.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from gpuheal.domain.telemetry import parse_value

REQUIRED = ("timestamp", "metric_name", "gpu_id", "device", "uuid", "modelName", "Hostname", "value")


class BadHeader(ValueError):
    """The file's first line is not a DCGM CSV header: the message names what is missing."""


@dataclass(frozen=True, slots=True)
class Row:
    """One reading of the CSV, its fields checked."""

    line: int
    timestamp: datetime
    metric_name: str
    gpu_id: int
    device: str
    uuid: str
    model_name: str
    hostname: str
    value: str
    container: str = ""
    pod: str = ""
    namespace: str = ""
    labels_raw: str = ""


def read_rows(path: Path, on_malformed: Callable[[int, str], None]) -> Generator[Row]:
    """The rows of the CSV at `path`, in file order; `BadHeader` (before any row) when its header is not one.

    The file is open only while the iterator is consumed, and closed when it is closed.
    """
    with path.open(newline="", encoding="utf-8-sig", errors="replace") as file:
        yield from parse_rows(file, on_malformed)


def parse_rows(file: TextIO, on_malformed: Callable[[int, str], None]) -> Iterator[Row]:
    """The rows of an open CSV text (see `read_rows`)."""
    # Strict: a quote never closed is an error, not the rest of the file read into one field.
    reader = csv.reader(file, strict=True)
    try:
        header = next(reader, None)
    except csv.Error as error:
        raise BadHeader(f"the CSV header is not CSV: {error}") from None
    if header is None:
        raise BadHeader("the CSV is empty: it has no header line")
    columns = _columns(header)
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            on_malformed(reader.line_num, f"not CSV: {error}")
            continue
        if not fields:  # a blank line is no reading at all
            continue
        line = reader.line_num
        if len(fields) != len(header):
            on_malformed(line, f"{len(fields)} fields where the header has {len(header)}")
            continue
        try:
            yield _row(line, fields, columns)
        except ValueError as error:
            on_malformed(line, str(error))


def _columns(header: list[str]) -> dict[str, int]:
    """Each column's index by its name; `BadHeader` naming a required column missing or a name given twice."""
    columns: dict[str, int] = {}
    for index, name in enumerate(header):
        if name.strip() in columns:
            raise BadHeader(f"the CSV header names the column {name.strip()} twice (header: {header})")
        columns[name.strip()] = index
    missing = [name for name in REQUIRED if name not in columns]
    if missing:
        raise BadHeader(f"the CSV header lacks the required column(s) {', '.join(missing)} (header: {header})")
    return columns


def _row(line: int, fields: list[str], columns: dict[str, int]) -> Row:
    def field(name: str) -> str:
        index = columns.get(name)
        return fields[index].strip() if index is not None else ""

    for name in ("uuid", "metric_name", "Hostname"):
        if not field(name):
            raise ValueError(f"{name} is empty")
    gpu_id = field("gpu_id")
    if not gpu_id.isascii() or not gpu_id.isdigit():
        raise ValueError(f"gpu_id {gpu_id!r} is not a GPU index")
    parse_value(field("value"))
    return Row(
        line=line,
        timestamp=_timestamp(field("timestamp")),
        metric_name=field("metric_name"),
        gpu_id=int(gpu_id),
        device=field("device"),
        uuid=field("uuid"),
        model_name=field("modelName"),
        hostname=field("Hostname"),
        value=field("value"),
        container=field("container"),
        pod=field("pod"),
        namespace=field("namespace"),
        # The exporter's labels are free text: kept exactly as written, spaces included.
        labels_raw=fields[columns["labels_raw"]] if "labels_raw" in columns else "",
    )


def _timestamp(text: str) -> datetime:
    """ISO 8601 (`2025-07-18T20:42:34Z`); a time without a zone is taken as UTC."""
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"timestamp {text!r} is not ISO 8601") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
