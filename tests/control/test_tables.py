"""The plain-text tables of `gpuheal status` and `gpuheal list`."""

from __future__ import annotations

from gpuheal.control.tables import render_table


def test_each_column_is_as_wide_as_its_widest_cell_and_no_line_ends_in_blanks() -> None:
    table = render_table(["NODE", "XID", "GPUS"], [["gpu-node-001", "79", ""], ["n2", "", "GPU-1,GPU-2"]])

    assert table.splitlines() == [
        "NODE          XID  GPUS",
        "gpu-node-001  79",
        "n2                 GPU-1,GPU-2",
    ]


def test_a_table_without_rows_is_its_header() -> None:
    assert render_table(["NODE", "PHASE"], []) == "NODE  PHASE"


def test_a_cell_holding_a_newline_or_a_tab_keeps_its_row_and_column() -> None:
    table = render_table(["NODE", "GPUS"], [["n1\nn2", "GPU-1\tGPU-2"], ["n3", "GPU-3"]])

    assert table.splitlines() == [
        "NODE    GPUS",
        "n1\\nn2  GPU-1\\tGPU-2",
        "n3      GPU-3",
    ]
