"""The DCGM exporter's CSV as `gpuheal-telemetry` reads it: columns by name, quoting, malformed rows."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gpuheal.tools.telemetry.rows import BadHeader, Row, parse_rows, read_rows

SAMPLE = Path(__file__).parent / "data" / "dcgm_sample.csv"
GPU_A = "GPU-5fd4f087-86f3-7a43-b711-4771313afc50"


def parsed(text: str) -> tuple[list[Row], list[tuple[int, str]]]:
    malformed: list[tuple[int, str]] = []
    rows = list(parse_rows(io.StringIO(text), lambda line, reason: malformed.append((line, reason))))
    return rows, malformed


def test_the_sample_s_rows_are_read_and_its_malformed_ones_counted_by_line() -> None:
    malformed: list[tuple[int, str]] = []
    rows = list(read_rows(SAMPLE, lambda line, reason: malformed.append((line, reason))))

    assert len(rows) == 12
    assert malformed == [
        (14, "value 'n/a' is not a number"),
        (15, "11 fields where the header has 12"),
        (16, "timestamp 'yesterday' is not ISO 8601"),
        (17, "gpu_id 'x' is not a GPU index"),
    ]
    first = rows[0]
    assert first == Row(
        line=2,
        timestamp=datetime(2025, 7, 18, 20, 42, 34, tzinfo=UTC),
        metric_name="DCGM_FI_DEV_GPU_UTIL",
        gpu_id=0,
        device="nvidia0",
        uuid=GPU_A,
        model_name="NVIDIA H100 80GB HBM3",
        hostname="dgx-node-031",
        value="75",
        labels_raw='DCGM_FI_DRIVER_VERSION="570.124.06",Hostname="dgx-node-031",err_msg="a, b"',
    )
    assert rows[1].value == "12", "the exporter's padding is not part of the number"
    assert (rows[2].container, rows[2].pod, rows[2].namespace) == ("trainer", "job-7f9c", "ml")


def test_columns_are_found_by_name_in_any_order_and_the_optional_ones_may_be_missing() -> None:
    rows, malformed = parsed(
        "value,Hostname,uuid,gpu_id,metric_name,timestamp,modelName,device\n"
        f"64,dgx-node-031,{GPU_A},3,DCGM_FI_DEV_GPU_TEMP,2025-07-18T20:42:34+02:00,H100,nvidia3\n"
    )

    assert malformed == []
    [row] = rows
    assert (row.value, row.hostname, row.uuid, row.gpu_id, row.metric_name, row.device) == (
        "64",
        "dgx-node-031",
        GPU_A,
        3,
        "DCGM_FI_DEV_GPU_TEMP",
        "nvidia3",
    )
    assert row.timestamp == datetime(2025, 7, 18, 18, 42, 34, tzinfo=UTC)
    assert (row.container, row.pod, row.namespace, row.labels_raw) == ("", "", "", "")


def test_a_header_without_required_columns_is_refused_naming_each() -> None:
    with pytest.raises(BadHeader, match=r"lacks the required column\(s\) uuid, value"):
        parsed("timestamp,metric_name,gpu_id,device,modelName,Hostname\n")
    with pytest.raises(BadHeader, match="the CSV is empty"):
        parsed("")


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        (f"2025-07-18T20:42:34Z,,0,nvidia0,{GPU_A},H100,h,1", "metric_name is empty"),
        ("2025-07-18T20:42:34Z,DCGM_FI_DEV_GPU_TEMP,0,nvidia0,,H100,h,1", "uuid is empty"),
        (f"2025-07-18T20:42:34Z,DCGM_FI_DEV_GPU_TEMP,-1,nvidia0,{GPU_A},H100,h,1", "gpu_id '-1' is not a GPU index"),
        (
            f"2025-07-18T20:42:34Z,DCGM_FI_DEV_GPU_TEMP,0,nvidia0,{GPU_A},H100,h,inf",
            "value 'inf' is not a finite number",
        ),
        (f"2025-07-18T20:42:34Z,DCGM_FI_DEV_GPU_TEMP,0,nvidia0,{GPU_A},H100,h,1,2", "9 fields where the header has 8"),
    ],
)
def test_a_malformed_row_is_skipped_and_reading_goes_on(row: str, reason: str) -> None:
    header = "timestamp,metric_name,gpu_id,device,uuid,modelName,Hostname,value\n"
    good = f"2025-07-18T20:42:35Z,DCGM_FI_DEV_GPU_TEMP,0,nvidia0,{GPU_A},H100,h,61\n"
    rows, malformed = parsed(header + row + "\n" + good)

    assert malformed == [(2, reason)]
    assert [r.value for r in rows] == ["61"], "the next row is still read"


HEADER = "timestamp,metric_name,gpu_id,device,uuid,modelName,Hostname,value,labels_raw\n"
GOOD = f"2025-07-18T20:42:35Z,DCGM_FI_DEV_GPU_TEMP,0,nvidia0,{GPU_A},H100,h,61,\n"


def test_a_field_over_the_csv_module_s_limit_is_a_malformed_row_and_reading_goes_on() -> None:
    huge = f'2025-07-18T20:42:34Z,DCGM_FI_DEV_GPU_TEMP,0,nvidia0,{GPU_A},H100,h,60,"{"x" * 140_000}"\n'
    rows, malformed = parsed(HEADER + huge + GOOD)

    assert [(line, reason.startswith("not CSV: field larger than field limit")) for line, reason in malformed] == [
        (2, True)
    ]
    assert [row.value for row in rows] == ["61"]


def test_an_unterminated_quote_is_a_malformed_row_not_labels() -> None:
    unterminated = f'2025-07-18T20:42:34Z,DCGM_FI_DEV_GPU_TEMP,0,nvidia0,{GPU_A},H100,h,60,"pod=job\n'
    rows, malformed = parsed(HEADER + GOOD + unterminated + GOOD)

    assert [row.labels_raw for row in rows] == [""]
    assert [reason for _, reason in malformed] == ["not CSV: unexpected end of data"]


def test_a_byte_order_mark_before_the_header_is_not_part_of_it(tmp_path: Path) -> None:
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbf" + (HEADER + GOOD).encode())

    assert [row.value for row in read_rows(path, lambda line, reason: None)] == ["61"]


def test_a_header_naming_a_column_twice_is_refused_naming_it() -> None:
    with pytest.raises(BadHeader, match="names the column value twice"):
        parsed(HEADER.replace("labels_raw", "value") + GOOD)
