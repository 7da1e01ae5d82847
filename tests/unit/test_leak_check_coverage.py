"""Every `Database` a test opens is leak-checked: tests open theirs through the
`open_database` fixture (or the database fixtures), never `Database.from_url` directly."""

from __future__ import annotations

from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
CHECKED_OPENER = TESTS / "plugins" / "database.py"


def test_no_test_opens_a_database_the_leak_check_cannot_see() -> None:
    direct = [
        f"{path.relative_to(TESTS.parent)}:{number}"
        for path in sorted(TESTS.rglob("*.py"))
        if path not in (CHECKED_OPENER, Path(__file__).resolve())
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if "Database.from_url(" in line
    ]
    assert not direct, f"use the open_database fixture instead of Database.from_url: {direct}"
