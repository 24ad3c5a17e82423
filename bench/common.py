"""Shared bits of the benchmarks: scenes, machine description, output folders."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))

from pramloc import runtime  # noqa: E402

runtime.configure()  # as the `pramloc` command runs: quiet glog, passive OpenMP, malloc, log lines
DATA = Path(os.environ.get("PRAMLOC_DATA", ROOT.parent / "shared" / "data"))
OUT = ROOT / "bench" / "out"  # maps and results files (large, not committed)
RESULTS = ROOT / "bench" / "results"  # raw JSON of each run (small, committed; docs/BENCHMARKS.md)
KITCHEN = DATA / "7scenes_redkitchen"
STRECHA = DATA / "strecha_herzjesu_P25"

# name -> (dataset kind, root, map split, query split, preset)
SCENES = {
    "7scenes-interleaved": ("7scenes", KITCHEN, KITCHEN / "splits/interleaved_db.txt",
                            KITCHEN / "splits/interleaved_query.txt", "indoor"),
    "7scenes-block": ("7scenes", KITCHEN, KITCHEN / "splits/block_db.txt", KITCHEN / "splits/block_query.txt", "indoor"),
    "strecha": ("strecha", STRECHA, STRECHA / "splits/db.txt", STRECHA / "splits/query.txt", "outdoor"),
}


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{os.cpu_count()} cores ({cpu}), {gpu}, Python {platform.python_version()}, torch {torch.__version__}"


def commit() -> str:
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True).strip()
    except Exception:
        return "unknown"


def stamp() -> dict:
    return {"date": time.strftime("%Y-%m-%d %H:%M %Z"), "machine": machine(), "commit": commit()}


def map_held_path(scene: str) -> Path:
    """Where bench/bench_gt_check.py writes ``scene``'s map-held query poses."""
    return OUT / "gt_check" / f"{scene}_map_held.txt"


def map_held_poses(scene: str) -> dict:
    """``scene``'s map-held poses (name -> world-to-camera Pose, every frame), {} where
    bench/bench_gt_check.py was not run."""
    from pramloc.io import read_poses

    path = map_held_path(scene)
    return read_poses(path) if path.exists() else {}


def localize_in_turn(locs: dict, queries) -> dict[str, list]:
    """Every query of the dataset ``queries`` localized by each localizer of ``locs`` in turn
    (query by query: the same machine load for all), after one warm-up query each (not kept).
    Returns name -> the :class:`pramloc.localize.QueryResult` of every query, in order."""
    im0 = queries.images[0]
    for loc in locs.values():  # first calls pay for lazy initialisation
        loc.localize(queries.path(im0.name), im0.camera, im0.name)
    results = {name: [] for name in locs}
    for im in queries.images:
        for name, loc in locs.items():
            results[name].append(loc.localize(queries.path(im.name), im.camera, im.name))
    return results
