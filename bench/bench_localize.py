"""Localization benchmark: each mode (recognition, retrieval, auto) on the same queries in
one run, accuracy at the four thresholds, median errors, and median/p90 time per stage.

    python bench/bench_localize.py [--scenes 7scenes-interleaved strecha south-building] [--modes ...]
                                   [--threads N]

``--threads 1``: the process limited to one compute thread, as each worker of
``localize --workers 2`` on 2 cores (the throughput setting); results then in
bench/results/localize_<scene>_threads1.json.

Needs the maps of bench/bench_build.py (bench/out/maps/<scene>; South Building: bench/bench_confidence.py's
reference112, built when missing). Writes
bench/results/localize_<scene>.json and the results files bench/out/results/<scene>_<mode>.txt.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import OUT, RESULTS, SCENES, stamp  # noqa: E402

STAGES = ("features", "recognition", "retrieval", "matching", "pnp", "refinement")


def stage_stats(logs: list[dict]) -> dict:
    out = {}
    for s in STAGES + ("total",):
        v = np.array([(sum(r["times"].values()) if s == "total" else r["times"].get(s, 0.0)) for r in logs])
        out[s] = {"median_ms": round(float(np.median(v)), 2), "p90_ms": round(float(np.percentile(v, 90)), 2)}
    no_feat = np.array([sum(t for k, t in r["times"].items() if k != "features") for r in logs])
    out["total_without_features"] = {"median_ms": round(float(np.median(no_feat)), 2),
                                     "p90_ms": round(float(np.percentile(no_feat, 90)), 2)}
    return out


# Positive of place recognition: camera centre within this distance (m) and viewing
# direction within 30 degrees (Strecha's map cameras stand metres apart).
POSITIVE_DISTANCE = {"7scenes-interleaved": 0.5, "7scenes-block": 0.5, "strecha": 3.0, "south-building": 1.0}
SOUTH_BUILDING = "south-building"  # not in SCENES (a COLMAP model, not a dataset layout): bench_confidence's map


def retrieval_recall(scene: str, logs: list[dict], map_dir: Path, queries=None) -> dict:
    """VLAD recall@1/5/10 of the fallback from the map images it retrieved per query."""
    from pramloc.datasets import load_dataset
    from pramloc.evaluate import retrieval_recall as recall
    from pramloc.mapio import load_map

    if queries is None:
        kind, root, _, qsplit, _ = SCENES[scene]
        queries = load_dataset(kind, root, qsplit)
    gt = {im.name: im.pose for im in queries.images}
    m = load_map(map_dir)
    d = POSITIVE_DISTANCE.get(scene, 0.5)
    retrieved = {r["name"]: r["retrieved"] for r in logs}
    return {**recall(retrieved, gt, dict(zip(m.image_names, m.poses)), max_distance=d, max_angle=30.0),
            "max_distance": d, "max_angle": 30.0}


def run(scene: str, modes: list[str], device: str | None, map_dir: Path | None = None, tag: str = "",
        write: bool = True, queries=None) -> dict:
    """Localize ``scene``'s queries (or the :class:`Scene` ``queries``, e.g. degraded copies)
    against ``map_dir`` in each mode; results files bench/out/results/<scene><tag>_<mode>.txt,
    bench/results/localize_<scene>.json when ``write``."""
    import torch

    from pramloc.datasets import load_dataset
    from pramloc.evaluate import evaluate
    from pramloc.localize import Localizer

    if scene == SOUTH_BUILDING:  # its 16 queries against the map of the reference poses of its 112 map photos
        from bench_confidence import SOUTH, south_building_map

        from pramloc.datasets import load_colmap

        map_dir = map_dir or south_building_map()
        queries = queries or load_colmap(SOUTH / "images", SOUTH / "reference", SOUTH / "splits/query.txt")
    else:
        kind, root, _, qsplit, _ = SCENES[scene]
        map_dir = map_dir or OUT / "maps" / scene
        queries = queries or load_dataset(kind, root, qsplit)
    gt = {im.name: im.pose for im in queries.images}
    locs = {m: Localizer(map_dir, m, device=device) for m in modes}
    # Warm-up (first calls pay for lazy initialisation), not timed.
    im0 = queries.images[0]
    for loc in locs.values():
        loc.localize(queries.path(im0.name), im0.camera, im0.name)
    logs = {m: [] for m in modes}
    results = {m: {} for m in modes}
    # Interleave the modes query by query so that they see the same machine load.
    for im in queries.images:
        for m, loc in locs.items():
            r = loc.localize(queries.path(im.name), im.camera, im.name)
            if device == "cuda":
                torch.cuda.synchronize()
            rec = r.log_record()
            logs[m].append(rec)
            if r.pose is not None:
                results[m][im.name] = r.pose
    report = {**stamp(), "scene": scene, "queries": len(queries.images), "threads": torch.get_num_threads(), "modes": {}}
    (OUT / "results").mkdir(parents=True, exist_ok=True)
    for m in modes:
        from pramloc.io import write_poses

        write_poses(OUT / "results" / f"{scene}{tag}_{m}.txt", results[m])
        with open(OUT / "results" / f"{scene}{tag}_{m}_log.jsonl", "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in logs[m])
        ev = evaluate(results[m], gt)
        paths = {p: sum(r["path"] == p for r in logs[m]) for p in ("recognition", "retrieval", "failed")}
        report["modes"][m] = {
            "recall": {f"{t['translation']}m,{t['rotation_deg']}deg": t["recall"] for t in ev["recall"]},
            "median_translation_cm": round(ev["median_translation"] * 100, 2),
            "median_rotation_deg": round(ev["median_rotation_deg"], 3),
            "failed": len(ev["missing"]), "paths": paths, "time": stage_stats(logs[m]),
        }
    if "retrieval" in modes:
        report["retrieval_recall"] = retrieval_recall(scene, logs["retrieval"], map_dir, queries)
    if "recognition" in modes and "retrieval" in modes:
        t = report["modes"]
        report["speedup_recognition_vs_retrieval"] = {
            "end_to_end": round(t["retrieval"]["time"]["total"]["median_ms"] / t["recognition"]["time"]["total"]["median_ms"], 2),
            "without_features": round(t["retrieval"]["time"]["total_without_features"]["median_ms"]
                                      / t["recognition"]["time"]["total_without_features"]["median_ms"], 2),
        }
    if write:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / f"localize_{scene}{tag}.json").write_text(json.dumps(report, indent=2))
    for m in modes:
        r = report["modes"][m]
        print(f"{scene + tag:22s} {m:12s} {r['recall']} median {r['median_translation_cm']} cm "
              f"{r['median_rotation_deg']} deg, failed {r['failed']}, paths {r['paths']}, "
              f"total {r['time']['total']['median_ms']} ms (p90 {r['time']['total']['p90_ms']}), "
              f"w/o features {r['time']['total_without_features']['median_ms']} ms")
    if "speedup_recognition_vs_retrieval" in report:
        print("speed-up recognition vs retrieval:", report["speedup_recognition_vs_retrieval"])
    return report


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenes", nargs="+", default=["7scenes-interleaved", "strecha"],
                    choices=[*SCENES, SOUTH_BUILDING])
    ap.add_argument("--modes", nargs="+", default=["recognition", "retrieval", "auto"])
    ap.add_argument("--device", default=None)
    ap.add_argument("--threads", type=int, default=None, help="compute threads (default: every core)")
    a = ap.parse_args()
    if a.threads:
        from pramloc.parallel import set_threads

        set_threads(a.threads)
    for s in a.scenes:
        run(s, a.modes, a.device, tag=f"_threads{a.threads}" if a.threads else "")
