"""The ``pramloc`` command: click commands only. Each parses, calls one function, prints."""

from __future__ import annotations

import functools
import logging
import sys
from pathlib import Path

import click

from . import logger
from .errors import PramlocError


def handle_errors(func):
    """Turn :class:`PramlocError` (and unreadable-file errors) into one line and exit 2."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except PramlocError as err:
            click.echo(f"pramloc: error: {err}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("pramloc: interrupted", err=True)
            sys.exit(130)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More logging (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors, no progress bars.")
@click.version_option(package_name="pramloc")
def main(verbose: int, quiet: bool):
    """pramloc: hierarchical visual localization with landmark recognition."""
    from . import progress

    if quiet:
        logger.setLevel(logging.WARNING)
        progress.DISABLE = True
    elif verbose:
        logger.setLevel(logging.DEBUG)


# --- map commands ---


# --- recognizer commands ---


# --- localize commands ---


# --- evaluate commands ---


if __name__ == "__main__":
    main()
