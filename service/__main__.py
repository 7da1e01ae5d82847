"""Command line: `novita-lifecycle` (also `python -m service`)."""

from __future__ import annotations

import click

from service import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="novita-lifecycle")
def cli() -> None:
    """Manage GPU instances on Novita.ai: serve the API and workers, migrate, simulate."""


def main() -> None:
    cli(auto_envvar_prefix=None)


if __name__ == "__main__":
    main()
