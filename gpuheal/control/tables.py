"""Plain-text tables for the operator commands (`gpuheal status`, `gpuheal list`)."""

from __future__ import annotations

from collections.abc import Sequence

_GAP = "  "


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """The rows under their headers, each column as wide as its widest cell, without trailing blanks."""
    widths = [max([len(header), *(len(row[column]) for row in rows)]) for column, header in enumerate(headers)]
    lines = [
        _GAP.join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in [headers, *rows]
    ]
    return "\n".join(lines)
