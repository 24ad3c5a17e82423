"""Pair selection of structure-from-motion at scale, on synthetic photo collections:
250, 500 and 1,000 photos along a street, each seeing a stretch of it, 4,096 RootSIFT-like
descriptors per photo (what the outdoor preset extracts). Measures the number of pairs
(it must grow as N x k, not N^2 / 2), the time of the whole selection as ``build-map``
runs it (:func:`pramloc.pairs.for_sfm`: the map's VLAD fitted on every photo, each photo
described, top-k by retrieval plus sequential neighbours), and how many pairs see
overlapping stretches of the street.

    python bench/bench_pairs.py [--sizes 250 500 1000]

Writes bench/results/pairs_synthetic.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, stamp  # noqa: E402

DESCRIPTORS = 4096  # per photo (outdoor preset: features.max_keypoints)
STEP = 40           # street prototypes between consecutive photos
VIEW = 800          # prototypes a photo sees (it overlaps the 2 * VIEW / STEP = 40 nearest photos)


def street(n: int, seed: int = 0) -> tuple[list[str], list[np.ndarray]]:
    """``n`` photos of a street: photo i sees prototypes [i STEP, i STEP + VIEW) of a long
    street of random non-negative unit 128-D descriptors, each observed with noise
    (RootSIFT-like: non-negative, unit norm), ``DESCRIPTORS`` per photo, shuffled."""
    rng = np.random.default_rng(seed)
    protos = np.abs(rng.normal(size=(n * STEP + VIEW, 128))).astype(np.float32)
    protos /= np.linalg.norm(protos, axis=1, keepdims=True)
    descs = []
    for i in range(n):
        idx = rng.integers(i * STEP, i * STEP + VIEW, DESCRIPTORS)
        d = np.abs(protos[idx] + rng.normal(scale=0.05, size=(DESCRIPTORS, 128)).astype(np.float32))
        descs.append(d / np.linalg.norm(d, axis=1, keepdims=True))
    return [f"IMG_{i:04d}.JPG" for i in range(n)], descs  # numbered in the order they were taken


def run(sizes: list[int]) -> dict:
    from pramloc.config import load_config
    from pramloc.pairs import for_sfm

    conf = load_config("outdoor")
    rows = []
    for n in sizes:
        names, descs = street(n)
        t = time.perf_counter()
        _, pairs, record = for_sfm(names, descs, conf.triangulation, conf.retrieval)
        seconds = time.perf_counter() - t
        pos = {name: i for i, name in enumerate(names)}
        overlap = np.mean([abs(pos[a] - pos[b]) * STEP < VIEW for a, b in pairs])
        rows.append({"photos": n, "pairs": len(pairs), "pairs_per_photo": round(len(pairs) / n, 2),
                     "exhaustive_pairs": n * (n - 1) // 2, "method": record["method"], "seconds": round(seconds, 2),
                     "share_overlapping": round(float(overlap), 4)})
        print(json.dumps(rows[-1]), flush=True)
        del descs
    k = conf.triangulation.retrieval_pairs
    report = {**stamp(), "k": k, "sequential": conf.triangulation.sequential_pairs, "descriptors_per_photo": DESCRIPTORS,
              "rows": rows}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "pairs_synthetic.json").write_text(json.dumps(report, indent=1) + "\n")
    return report


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", type=int, default=[250, 500, 1000])
    run(ap.parse_args().sizes)
