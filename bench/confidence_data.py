"""Training data of the pose confidence (bench/fit_confidence.py): held-out map images.

No evaluation query is used. Every frame of the 7-Scenes sequence and every Strecha image
is a query of some evaluation split, so the training maps are built from *part of the
database (map) splits* and queried with *the other part*:

- ``kitchen-even``: map from the interleaved map frames 0, 12, 24, ... (every 12th),
  queries the interleaved map frames 6, 18, 30, ... (a view between two map frames);
- ``kitchen-early``: map from the block map frames below 300, queries the block map frames
  300..597 (views the map barely covers: wrong poses and failures);
- ``kitchen-gaps``: map from the block map frames except two stretches (120-177 and
  420-477), queries those stretches: a map spanning most of the sequence, whose ground
  truth drifts between distant frames (as the block split's map), so that right poses
  reproject less tightly than on a map of a short stretch;
- ``strecha-quarter``: map from Strecha images 0000, 0004, ..., 0024, queries 0002, 0006,
  ..., 0022.

Each held-out image is localized as it is and as hard variants with known ground truth
(:func:`variants`): a crop (principal point moved), a 90 degree rotation (intrinsics and
pose rotated), half resolution, an occluded half, and dark / noisy / blurred copies
(bench/bench_degraded.py's degradations); and the images of each scene are localized
against the other scene's maps (every pose found there is wrong). Seeds are fixed.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import KITCHEN, OUT, SCENES, STRECHA  # noqa: E402

WORK = OUT / "confidence"


def _frame(name: str) -> int:
    return int(Path(name).name.split("-")[1].split(".")[0])


def _strecha(name: str) -> int:
    return int(Path(name).stem)


def _in_gaps(name: str) -> bool:
    return 120 <= _frame(name) < 180 or 420 <= _frame(name) < 480


def _split_names(scene: str) -> list[str]:
    from pramloc.datasets import apply_split, load_dataset

    kind, root, db, _, _ = SCENES[scene]
    return apply_split(load_dataset(kind, root).names, db, root)


def training_splits() -> dict[str, tuple[str, list[str], list[str]]]:
    """name -> (dataset scene of bench/common.py, map image names, query image names)."""
    inter = _split_names("7scenes-interleaved")
    block = _split_names("7scenes-block")
    strecha = _split_names("strecha")
    return {
        "kitchen-even": ("7scenes-interleaved", [n for n in inter if _frame(n) % 12 == 0],
                         [n for n in inter if _frame(n) % 12 == 6]),
        "kitchen-early": ("7scenes-block", [n for n in block if _frame(n) < 300],
                          [n for n in block if _frame(n) >= 300]),
        "kitchen-gaps": ("7scenes-block", [n for n in block if not _in_gaps(n)], [n for n in block if _in_gaps(n)]),
        "strecha-quarter": ("strecha", [n for n in strecha if _strecha(n) % 4 == 0],
                            [n for n in strecha if _strecha(n) % 4 == 2]),
    }


def build_maps(names: list[str] | None = None) -> dict[str, Path]:
    """Build (once) the training maps under bench/out/confidence/maps/<name>, with their
    scene's preset, as ``pramloc build-map`` does. Returns name -> map folder."""
    from pramloc import build
    from pramloc.config import load_config
    from pramloc.datasets import load_dataset
    from pramloc.parallel import num_cores

    out = {}
    for name, (scene, db, _) in training_splits().items():
        if names and name not in names:
            continue
        path = WORK / "maps" / name
        out[name] = path
        if (path / "manifest.json").exists():
            continue
        kind, root, _, _, preset = SCENES[scene]
        split = WORK / "splits" / f"{name}_db.txt"
        split.parent.mkdir(parents=True, exist_ok=True)
        split.write_text("".join(n + "\n" for n in db))
        build.main(load_config(preset), load_dataset(kind, root, split), path, overwrite=True,
                   workers=num_cores())
    return out


if __name__ == "__main__":
    print(build_maps(sys.argv[1:] or None))
