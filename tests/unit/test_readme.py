"""The README's configuration table lists every setting, exactly as the code defines it."""

from __future__ import annotations

from pathlib import Path

from scripts.settings_table import table

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_configuration_table_matches_the_settings() -> None:
    text = README.read_text()
    start = text.index("<!-- settings:start -->") + len("<!-- settings:start -->")
    end = text.index("<!-- settings:end -->")
    assert text[start:end].strip() == table(), (
        "README's configuration table is stale: run `.venv/bin/python scripts/settings_table.py`"
        " and paste its output between the settings markers"
    )
