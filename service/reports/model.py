"""What a report is made of: named sections of typed columns and rows."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    # Digits kept for a float column (rounded in every format); None for text and integers.
    decimals: int | None = None


@dataclass(frozen=True, slots=True)
class Section:
    name: str
    columns: tuple[Column, ...]
    rows: tuple[tuple[Any, ...], ...]

    def records(self) -> list[dict[str, Any]]:
        names = [column.name for column in self.columns]
        return [dict(zip(names, row, strict=True)) for row in self.rows]


@dataclass(frozen=True, slots=True)
class Report:
    name: str
    generated_at: datetime
    parameters: dict[str, Any]  # JSON-ready: the window or moment and the grouping used
    sections: tuple[Section, ...]

    def section(self, name: str) -> Section:
        for section in self.sections:
            if section.name == name:
                return section
        raise KeyError(name)


def sort_key(row: tuple[Any, ...], width: int) -> tuple[Any, ...]:
    """Order rows by their first `width` values, missing values last (both engines agree)."""
    return tuple((value is None, "" if value is None else value) for value in row[:width])
