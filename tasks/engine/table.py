"""Plain-text tables for the terminal and the README (GitHub-flavoured markdown)."""

from __future__ import annotations

from collections.abc import Sequence


def format_table(
    headers: Sequence[str], rows: Sequence[Sequence[object]], *, floatfmt: str = ".3f"
) -> str:
    """A markdown table; numbers right-aligned (floats as ``floatfmt``), the rest left-aligned."""
    cells = [[str(h) for h in headers]] + [[_fmt(c, floatfmt) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    numeric = [
        any(isinstance(row[i], int | float) for row in rows)
        and all(isinstance(row[i], int | float) or row[i] in ("-", "") for row in rows)
        for i in range(len(headers))
    ]

    def line(row: list[str]) -> str:
        parts = [c.rjust(w) if num else c.ljust(w) for c, w, num in zip(row, widths, numeric)]
        return "| " + " | ".join(parts) + " |"

    rule = "|".join(
        ("-" * (w + 1) + ":") if num else ("-" * (w + 2)) for w, num in zip(widths, numeric)
    )
    rule = f"|{rule}|"
    return "\n".join([line(cells[0]), rule] + [line(r) for r in cells[1:]])


def _fmt(value: object, floatfmt: str) -> str:
    return format(value, floatfmt) if isinstance(value, float) else str(value)
