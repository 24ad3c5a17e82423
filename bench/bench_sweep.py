"""Localization settings side by side on one map: accuracy and time per query after feature
extraction, every variant on the same queries, query by query in turn (the same machine load).

    python bench/bench_sweep.py --scene 7scenes-block [--map bench/out/maps/7scenes-block] \
        [--variants '{"base": {}, "mk512": {"match_keypoints": 512}, "retrieval": {"mode": "retrieval"}}']

A variant is a dict of localization settings (pramloc/config.py ``LocalizationConfig``) with an
optional ``mode`` (default recognition). Writes bench/results/sweep_<scene>.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import OUT, RESULTS, SCENES, localize_in_turn, stamp  # noqa: E402

# What issue 27 tried to make the recognition path cheaper (2026-12-06): fewer keypoints matched
# or labelled, fewer co-visible images in the refinement, one hypothesis.
DEFAULT = {"base": {}, "match_keypoints=768": {"match_keypoints": 768}, "match_keypoints=512": {"match_keypoints": 512},
           "covisible_images=5": {"covisible_images": 5}, "hypotheses=1": {"hypotheses": 1},
           "recognition_keypoints=384": {"recognition_keypoints": 384},
           "recognition_keypoints=256": {"recognition_keypoints": 256}, "landmark_points=128": {"landmark_points": 128},
           "landmark_visibility=0.8": {"landmark_visibility": 0.8}, "retrieval": {"mode": "retrieval"}}


def run(scene: str, map_dir: Path, variants: dict[str, dict]) -> dict:
    import numpy as np

    from pramloc.datasets import load_dataset
    from pramloc.evaluate import evaluate
    from pramloc.localize import Localizer

    kind, root, _, qsplit, _ = SCENES[scene]
    queries = load_dataset(kind, root, qsplit)
    gt = {im.name: im.pose for im in queries.images}
    locs = {}
    for name, settings in variants.items():
        settings = dict(settings)
        locs[name] = Localizer(map_dir, settings.pop("mode", "recognition"), settings)
    results = localize_in_turn(locs, queries)
    poses = {n: {r.name: r.pose for r in rs if r.pose is not None} for n, rs in results.items()}
    times = {n: [r.times_ms for r in rs] for n, rs in results.items()}
    report = {**stamp(), "scene": scene, "map": str(map_dir), "queries": len(queries.images), "variants": {}}
    for n in locs:
        ev = evaluate(poses[n], gt)
        stages = sorted({k for t in times[n] for k in t if k != "features"})
        report["variants"][n] = {
            "settings": variants[n],
            "recall": {f"{t['translation']}m,{t['rotation_deg']}deg": t["recall"] for t in ev["recall"]},
            "failed": len(ev["missing"]),
            "median_ms_without_features": round(float(np.median([sum(v for k, v in t.items() if k != "features")
                                                                   for t in times[n]])), 2),
            "median_ms": {k: round(float(np.median([t.get(k, 0.0) for t in times[n]])), 2) for k in stages}}
        v = report["variants"][n]
        print(f"{scene} {n:28s} {[round(100 * x, 1) for x in v['recall'].values()]} failed {v['failed']}, "
              f"{v['median_ms_without_features']} ms w/o features {v['median_ms']}", flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"sweep_{scene}.json").write_text(json.dumps(report, indent=1) + "\n")
    return report


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scene", required=True, choices=list(SCENES))
    ap.add_argument("--map", type=Path, default=None, help="map folder (default: bench/out/maps/SCENE)")
    ap.add_argument("--variants", type=json.loads, default=DEFAULT, help="JSON: name -> settings")
    a = ap.parse_args()
    run(a.scene, a.map or OUT / "maps" / a.scene, a.variants)
