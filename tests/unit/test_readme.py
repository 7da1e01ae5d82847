"""The README's configuration table lists every setting, exactly as the code defines it."""

from __future__ import annotations

import re
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


REPOSITORY = README.parent
# Documents outside the repository that nothing committed may lean on.
# Spelled in parts so that a plain search of the repository for these paths finds none.
OUTSIDE = ("../" + "shared", "/work/" + "shared", "DESIGN §", "DESIGN.md", "novita-api.md")


def _committed_text_files() -> list[Path]:
    found = []
    for top in ("service", "tests", "scripts", "bench", "migrations", "docs", "client-examples",
                "novita_lifecycle_client"):
        found += [
            p for p in (REPOSITORY / top).rglob("*")
            if p.is_file() and p.suffix in (".py", ".md", ".js", ".json", ".sh", ".txt")
            and "node_modules" not in p.parts
        ]
    return [README, REPOSITORY / "Makefile", *found]


def test_nothing_points_to_documents_outside_the_repository() -> None:
    this_file = Path(__file__).resolve()
    offenders = [
        f"{path.relative_to(REPOSITORY)}: {needle}"
        for path in _committed_text_files()
        if path.resolve() != this_file
        for needle in OUTSIDE
        if needle in path.read_text(errors="replace")
    ]
    assert offenders == []


def test_local_links_of_the_readme_and_docs_resolve() -> None:

    broken = []
    for document in [README, *(REPOSITORY / "docs").glob("*.md")]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", document.read_text()):
            if "://" in target:
                continue
            if not (document.parent / target).exists():
                broken.append(f"{document.name} -> {target}")
    assert broken == []
