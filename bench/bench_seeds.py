"""How far the RANSAC seed alone moves a split's numbers: each mode localized with several
seeds (``localization.seed``) in one run, the same map and query features, judged
against the ground truth and, where bench/bench_gt_check.py was run, against the
map-held poses (query poses refined on the images with the map frames held at their
ground truth).

    python bench/bench_seeds.py [--scene 7scenes-block] [--modes ...] [--seeds 0 1 2 3 4]
                                [--set localization.key=value ...] [--tag NAME]

Read a difference between two configurations against this spread: one seed is one draw.
Writes bench/results/seeds_<scene>[_<tag>].json (per mode and seed: recall at the four
thresholds, median errors, failures; per mode: mean, min and max over the seeds).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import OUT, RESULTS, SCENES, map_held_poses, stamp  # noqa: E402


def _summary(ev: dict) -> dict:
    return {"recall": {f"{t['translation']}m,{t['rotation_deg']}deg": t["recall"] for t in ev["recall"]},
            "median_translation_cm": round(ev["median_translation"] * 100, 2),
            "median_rotation_deg": round(ev["median_rotation_deg"], 3), "failed": len(ev["missing"])}


def _stats(values) -> dict:
    v = np.asarray(values, float)
    return {"mean": round(float(v.mean()), 6), "min": float(v.min()), "max": float(v.max())}


def _spread(runs: list[dict]) -> dict:
    """Mean, min and max over the seeds' runs, of each recall and of the other numbers."""
    return {"recall": {k: _stats([r["recall"][k] for r in runs]) for k in runs[0]["recall"]},
            **{k: _stats([r[k] for r in runs]) for k in ("median_translation_cm", "median_rotation_deg", "failed")}}


def run(scene: str, modes: list[str], seeds: list[int], overrides: dict, tag: str = "") -> dict:
    from pramloc.datasets import load_dataset
    from pramloc.evaluate import evaluate
    from pramloc.localize import Localizer

    kind, root, _, qsplit, _ = SCENES[scene]
    queries = load_dataset(kind, root, qsplit)
    gt = {im.name: im.pose for im in queries.images}
    held = {k: v for k, v in map_held_poses(scene).items() if k in gt}
    map_dir = OUT / "maps" / scene
    locs = {(m, s): Localizer(map_dir, m, {**overrides, "seed": s}) for m in modes for s in seeds}
    poses = {k: {} for k in locs}
    for im in queries.images:
        for k, loc in locs.items():
            r = loc.localize(queries.path(im.name), im.camera, im.name)
            if r.pose is not None:
                poses[k][im.name] = r.pose
    report = {**stamp(), "scene": scene, "tag": tag, "queries": len(gt), "seeds": seeds, "overrides": overrides,
              "map_held": bool(held), "modes": {}}
    for m in modes:
        entry = {"ground_truth": {"runs": [_summary(evaluate(poses[m, s], gt)) for s in seeds]}}
        if held:
            entry["map_held"] = {"runs": [_summary(evaluate(poses[m, s], held)) for s in seeds]}
        for ref in entry.values():
            ref["spread"] = _spread(ref["runs"])
        report["modes"][m] = entry
        for name, ref in entry.items():
            print(f"{scene} {m:12s} vs {name:12s}", {k: f"{100 * v['mean']:.1f} [{100 * v['min']:.1f}, {100 * v['max']:.1f}]"
                                                     for k, v in ref["spread"]["recall"].items()})
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"seeds_{scene}{'_' + tag if tag else ''}.json").write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scene", default="7scenes-block", choices=list(SCENES))
    ap.add_argument("--modes", nargs="+", default=["recognition", "retrieval", "auto"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="localization settings, e.g. first_match_keypoints=512 (YAML values)")
    ap.add_argument("--tag", default="")
    a = ap.parse_args()
    import yaml

    run(a.scene, a.modes, a.seeds, {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in a.set)}, a.tag)
