"""Plain-text tables for the operator commands (`gpuheal status`, `gpuheal list`)."""

from __future__ import annotations

from collections.abc import Sequence

_GAP = "  "


def visible(cell: str) -> str:
    """The cell on one line: a character that does not print (a newline, a tab) as its escape (`\\n`),
    so that a search attribute or a reason holding one keeps its row and its column."""
    return "".join(char if char.isprintable() else char.encode("unicode_escape").decode("ascii") for char in cell)


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """The rows under their headers, each column as wide as its widest cell, without trailing blanks."""
    lines = [[visible(cell) for cell in line] for line in [headers, *rows]]
    widths = [max(len(line[column]) for line in lines) for column in range(len(headers))]
    return "\n".join(
        _GAP.join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip() for line in lines
    )
