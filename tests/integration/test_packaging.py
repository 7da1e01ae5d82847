"""An installed package has the dashboard's templates and assets: the wheel built from
this tree carries every file under service/dashboard/templates and static."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "service" / "dashboard"


def test_the_wheel_ships_the_dashboards_templates_and_assets(tmp_path: Path) -> None:
    # Built from a copy, so no build/ directory is left in (or reused from) the tree.
    source = tmp_path / "source"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("service", "novita_lifecycle_client"):
        shutil.copytree(ROOT / name, source / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    out = tmp_path / "dist"
    run = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    (wheel,) = out.glob("novita_lifecycle-*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    wanted = {
        path.relative_to(ROOT).as_posix()
        for folder in ("templates", "static")
        for path in (DASHBOARD / folder).iterdir()
    }
    assert wanted and wanted <= shipped, sorted(wanted - shipped)
