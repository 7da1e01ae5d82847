"""Report output: `table` for a terminal, `csv` and `json` for other tools.

CSV holds one section (the first unless one is chosen): a header row of column names,
then one line per row; empty cells are missing values; floats have a fixed number of
decimals per column. A text cell that a spreadsheet would run as a formula (it starts
with `=`, `+`, `-`, `@`, a tab or a carriage return; names and labels are chosen by
clients) gets a leading `'`, so it shows as text; numbers are written as they are.
JSON holds every section (or the chosen one): `{"report", "generatedAt", "parameters",
"sections": {name: {"columns": [...], "rows": [{column: value}]}}}`, floats rounded like
in CSV, missing values null.
"""

from __future__ import annotations

import csv
import io
from typing import Any

import orjson

from service.errors import ValidationFailedError
from service.presenters import iso
from service.reports.model import Column, Report, Section

FORMATS = ("table", "csv", "json")


def render(report: Report, fmt: str, *, section: str | None = None) -> str:
    if fmt not in FORMATS:
        raise ValidationFailedError(
            [{"field": "format", "message": f"one of: {', '.join(FORMATS)}", "value": fmt}]
        )
    sections = _chosen(report, section)
    if fmt == "json":
        return _json(report, sections)
    if fmt == "csv":
        return _csv(sections[0])
    return "\n".join(_table(item) for item in sections)


def _chosen(report: Report, name: str | None) -> tuple[Section, ...]:
    if name is None:
        return report.sections
    try:
        return (report.section(name),)
    except KeyError:
        names = ", ".join(item.name for item in report.sections)
        raise ValidationFailedError(
            [{"field": "section", "message": f"{report.name} has sections: {names}", "value": name}]
        ) from None


def _rounded(column: Column, value: Any) -> Any:
    if value is None or column.decimals is None:
        return value
    return round(float(value), column.decimals)


def _text(column: Column, value: Any) -> str:
    if value is None:
        return ""
    if column.decimals is not None:
        return f"{float(value):.{column.decimals}f}"
    return str(value)


def _json(report: Report, sections: tuple[Section, ...]) -> str:
    document = {
        "report": report.name,
        "generatedAt": iso(report.generated_at),
        "parameters": report.parameters,
        "sections": {
            item.name: {
                "columns": [column.name for column in item.columns],
                "rows": [
                    {c.name: _rounded(c, v) for c, v in zip(item.columns, row, strict=True)}
                    for row in item.rows
                ],
            }
            for item in sections
        },
    }
    return orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n"


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(column: Column, value: Any) -> str:
    """The cell's text; text from the data that starts like a formula is neutralised."""
    text = _text(column, value)
    if isinstance(value, str) and text.startswith(FORMULA_STARTS):
        return "'" + text
    return text


def _csv(item: Section) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([column.name for column in item.columns])
    for row in item.rows:
        writer.writerow([csv_cell(c, v) for c, v in zip(item.columns, row, strict=True)])
    return buffer.getvalue()


def _table(item: Section) -> str:
    header = [column.name for column in item.columns]
    cells = [
        [_text(c, v) or "-" for c, v in zip(item.columns, row, strict=True)] for row in item.rows
    ]
    widths = [max(len(text) for text in column) for column in zip(header, *cells, strict=True)]
    numeric = [
        bool(item.rows)
        and all(isinstance(row[i], int | float) or row[i] is None for row in item.rows)
        for i in range(len(header))
    ]

    def line(values: list[str]) -> str:
        return "  ".join(
            text.rjust(width) if right else text.ljust(width)
            for text, width, right in zip(values, widths, numeric, strict=True)
        ).rstrip()

    out = [f"== {item.name} ==", line(header), line(["-" * width for width in widths])]
    out += [line(row) for row in cells] or ["(no rows)"]
    return "\n".join(out) + "\n"
