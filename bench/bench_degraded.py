"""Degraded queries: the 7-Scenes interleaved queries made dark, noisy and motion-blurred,
localized against each extractor's map in one run.

    python bench/bench_degraded.py [--extractors sift xfeat disk] [--degradations dark noise blur combined]
                                   [--modes auto] [--train-minutes M] [--seed 0]

- ``dark``: gamma 2.5 on [0, 1] intensities (``255 (I / 255) ^ 2.5``);
- ``noise``: additive Gaussian noise, sigma 8 grey levels, per channel, clipped to [0, 255];
- ``blur``: horizontal linear motion blur over 7 px (a 1x7 box kernel);
- ``combined``: all three on one image, in the camera's order (blur, then dark, then noise).

The copies are generated (seeded: ``--seed``, plus the query's index for the noise) into
bench/out/degraded/<degradation>/ with the dataset's relative names (JPEG quality 95),
never into the shared data. Maps: bench/out/maps/7scenes-interleaved_<extractor> from
bench/bench_features.py, built here (with ``--train-minutes``) when missing. Writes
bench/results/degraded_<extractor>.json (per degradation: accuracy at the four
thresholds, time per stage). Tables: ``python bench/report.py``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_features  # noqa: E402
import bench_localize  # noqa: E402
from common import OUT, RESULTS, SCENES, stamp  # noqa: E402

SCENE = "7scenes-interleaved"
GAMMA, NOISE_SIGMA, BLUR_PX = 2.5, 8.0, 7
DEGRADATIONS = ("dark", "noise", "blur", "combined")


def degrade(image: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """One degradation of a uint8 image (H, W[, 3]); returns uint8 of the same shape."""
    if kind == "combined":  # in the camera's order: motion blur, low light, sensor noise
        for k in ("blur", "dark", "noise"):
            image = degrade(image, k, rng)
        return image
    x = image.astype(np.float32)
    if kind == "dark":
        x = 255.0 * (x / 255.0) ** GAMMA
    elif kind == "noise":
        x = x + rng.normal(0.0, NOISE_SIGMA, x.shape).astype(np.float32)
    elif kind == "blur":
        x = cv2.filter2D(x, -1, np.full((1, BLUR_PX), 1.0 / BLUR_PX, np.float32), borderType=cv2.BORDER_REFLECT)
    else:
        raise ValueError(f"unknown degradation {kind!r} (known: {', '.join(DEGRADATIONS)})")
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def degraded_queries(kind: str, seed: int):
    """The interleaved query Scene with its images replaced by degraded copies (written
    once per degradation and seed into bench/out/degraded/<kind>-s<seed>/)."""
    from pramloc.datasets import Scene, load_dataset

    dkind, root, _, qsplit, _ = SCENES[SCENE]
    queries = load_dataset(dkind, root, qsplit)
    out = OUT / "degraded" / f"{kind}-s{seed}"
    for i, im in enumerate(queries.images):
        dst = out / im.name
        if dst.exists():
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        image = cv2.imread(str(queries.path(im.name)), cv2.IMREAD_COLOR)
        cv2.imwrite(str(dst), degrade(image, kind, np.random.default_rng([seed, i])), [cv2.IMWRITE_JPEG_QUALITY, 95])
    return Scene(out, queries.images, {**queries.source, "degradation": kind, "seed": seed})


def run(extractors: list[str], degradations: list[str], modes: list[str], train_minutes: float | None,
        seed: int, device: str | None) -> dict:
    maps = {}
    for x in extractors:
        maps[x] = OUT / "maps" / f"{SCENE}_{x}"
        if not (maps[x] / "manifest.json").exists():
            bench_features.run(SCENE, x, modes, train_minutes, device, [])
    reports = {x: {**stamp(), "scene": SCENE, "extractor": x, "map": str(maps[x]), "seed": seed,
                   "degradations": {}} for x in extractors}
    for kind in degradations:
        queries = degraded_queries(kind, seed)
        for x in extractors:
            r = bench_localize.run(SCENE, modes, device, maps[x], tag=f"_{x}_{kind}", write=False, queries=queries)
            reports[x]["degradations"][kind] = r["modes"]
    RESULTS.mkdir(parents=True, exist_ok=True)
    for x, rep in reports.items():
        (RESULTS / f"degraded_{x}.json").write_text(json.dumps(rep, indent=2))
    for kind in degradations:
        print(kind, {x: {m: reports[x]["degradations"][kind][m]["recall"] for m in modes} for x in extractors})
    return reports


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--extractors", nargs="+", default=list(bench_features.EXTRACTORS), choices=bench_features.EXTRACTORS)
    ap.add_argument("--degradations", nargs="+", default=list(DEGRADATIONS), choices=DEGRADATIONS)
    ap.add_argument("--modes", nargs="+", default=["auto"])
    ap.add_argument("--train-minutes", type=float, default=None, help="Recognizer budget of maps built here.")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default=None)
    a = ap.parse_args()
    run(a.extractors, a.degradations, a.modes, a.train_minutes, a.seed, a.device)
