"""Print the README's configuration table from `service.settings.Settings`.

    .venv/bin/python scripts/settings_table.py           # print it
    .venv/bin/python scripts/settings_table.py --write   # refresh README.md in place

The README keeps the table between the `settings:start` and `settings:end` markers; a
test fails when it is stale.
"""

from __future__ import annotations

import sys
from pathlib import Path

from service.settings import Settings

README = Path(__file__).resolve().parents[1] / "README.md"
START, END = "<!-- settings:start -->", "<!-- settings:end -->"


def table() -> str:
    rows = ["| Variable | Default | Meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = field.default
        if isinstance(default, tuple):
            default = ",".join(map(str, default))
        shown = f"`{default}`" if default not in (None, "", ()) else "—"
        rows.append(f"| `{name.upper()}` | {shown} | {field.description} |")
    return "\n".join(rows)


def write_readme() -> None:
    text = README.read_text()
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    README.write_text(f"{head}{START}\n{table()}\n{END}{tail}")


if __name__ == "__main__":
    if "--write" in sys.argv:
        write_readme()
    else:
        print(table())
