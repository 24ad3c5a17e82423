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

@main.command("evaluate")
@click.argument("results", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--dataset", type=click.Choice(["7scenes", "strecha"]), help="Ground truth from a dataset (with --root).")
@click.option("--root", type=click.Path(path_type=Path), help="Dataset folder.")
@click.option("--gt-model", type=click.Path(path_type=Path), help="Ground truth as a COLMAP model folder.")
@click.option("--gt-poses", type=click.Path(path_type=Path), help="Ground truth as 'name qw qx qy qz tx ty tz' lines.")
@click.option("--queries", type=click.Path(path_type=Path), help="Split file of query names (default: all GT images).")
@click.option("--json", "json_out", type=click.Path(path_type=Path), help="Write all numbers (per query too) here.")
@click.option("--plot", "plot_out", type=click.Path(path_type=Path), help="Write cumulative error curves (PNG) here.")
@click.option("--thresholds", default="0.05,5;0.25,2;0.5,5;5,10", show_default=True,
              help="'metres,degrees' pairs separated by ';'.")
@handle_errors
def evaluate_cmd(results, dataset, root, gt_model, gt_poses, queries, json_out, plot_out, thresholds):
    """Pose accuracy of RESULTS files (one per method, compared side by side) against ground truth."""
    from . import evaluate

    ths = evaluate.parse_thresholds(thresholds)
    gt, names = evaluate.load_ground_truth(dataset, root, gt_model, gt_poses, queries)
    report = evaluate.main(list(results), gt, names, ths, json_out, plot_out)
    click.echo(evaluate.format_table(report))
    for run in report["runs"]:
        if run["metrics"]["missing"]:
            click.echo(f"{run['label']}: {len(run['metrics']['missing'])} query image(s) not localized "
                       f"(counted as failures), e.g. {run['metrics']['missing'][0]}")
    for what in ("json", "plot"):
        if report[what]:
            click.echo(f"wrote {report[what]}")


if __name__ == "__main__":
    main()
