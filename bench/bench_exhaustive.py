"""Reference in the same run: hloc's way of localizing, with pramloc's own features and
triangulated model, so the comparison is of the localizers alone.

For each query: its SIFT features are matched to every map image's features (mutual nearest
neighbours with a 0.8 ratio test, as hloc's ``NN-ratio``), each match to a triangulated
keypoint becomes a 2D-3D correspondence (one per map image: hloc's ``localize_sfm`` without
covisibility clustering), and the pose is estimated by pycolmap's P3P LO-RANSAC with hloc's
default 12 px threshold. The model is the full triangulated model of the map's build cache
(every point, every observation), the features those of the map's build cache.

    python bench/bench_exhaustive.py [--scenes 7scenes-block]

Needs the maps of bench/bench_build.py. Writes bench/results/exhaustive_<scene>.json and the
poses to bench/out/results/<scene>_exhaustive.txt.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import OUT, RESULTS, SCENES, stamp  # noqa: E402


def run(scene: str, map_dir: Path | None = None, ratio: float = 0.8, max_error: float = 12.0) -> dict:
    import pycolmap
    import torch

    from pramloc.build import cache_dir
    from pramloc.datasets import load_dataset
    from pramloc.evaluate import evaluate
    from pramloc.features import extract_path
    from pramloc.io import list_feature_names, read_features
    from pramloc.mapio import load_map
    from pramloc.matching import match
    from pramloc.registration import estimate_pose

    kind, root, _, qsplit, _ = SCENES[scene]
    map_dir = map_dir or OUT / "maps" / scene
    m = load_map(map_dir)
    cache = cache_dir(map_dir)
    rec = pycolmap.Reconstruction(str(next(p for p in sorted(cache.glob("sfm-*")) if (p / "points3D.bin").exists())))
    feats_path = next(cache.glob("features-*.h5"))
    names = [n for n in list_feature_names(feats_path) if n in set(m.image_names)]
    db = {n: read_features(feats_path, n) for n in names}
    # Per map image: the 3D point of each keypoint (NaN where none was triangulated).
    xyz = {}
    for im in rec.images.values():
        if im.name in db:
            a = np.full((len(db[im.name]["keypoints"]), 3), np.nan)
            for j, p in enumerate(im.points2D):
                if p.has_point3D():
                    a[j] = rec.points3D[p.point3D_id].xyz
            xyz[im.name] = a
    db_desc = {n: torch.from_numpy(f["descriptors"]) for n, f in db.items()}
    queries = load_dataset(kind, root, qsplit)
    results, times, inliers = {}, [], []
    for im in queries.images:
        f = extract_path(queries.path(im.name), m.manifest["feature"])
        t = time.perf_counter()
        q = torch.from_numpy(f["descriptors"])
        p2, p3 = [], []
        for n in names:
            mm, _ = match(q, db_desc[n], ratio=ratio, mutual=True)
            mm = mm.numpy()
            x = xyz[n][mm[:, 1]]
            ok = np.isfinite(x[:, 0])
            p2.append(f["keypoints"][mm[ok, 0]])
            p3.append(x[ok])
        est = estimate_pose(np.concatenate(p2).astype(np.float64), np.concatenate(p3), im.camera, max_error, 4)
        times.append(time.perf_counter() - t)
        if est is not None:
            results[im.name] = est.pose
            inliers.append(est.num_inliers)
    ev = evaluate(results, {im.name: im.pose for im in queries.images})
    from pramloc.io import write_poses

    write_poses(OUT / "results" / f"{scene}_exhaustive.txt", results)  # for bench_gt_check.py
    report = {**stamp(), "scene": scene, "queries": len(queries.images), "map_images": len(names),
              "ratio": ratio, "ransac_max_error": max_error,
              "recall": {f"{t['translation']}m,{t['rotation_deg']}deg": t["recall"] for t in ev["recall"]},
              "median_translation_cm": round(ev["median_translation"] * 100, 2),
              "median_rotation_deg": round(ev["median_rotation_deg"], 3), "failed": len(ev["missing"]),
              "median_inliers": float(np.median(inliers)) if inliers else 0,
              "median_time_without_features_ms": round(float(np.median(times)) * 1000, 1)}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"exhaustive_{scene}.json").write_text(json.dumps(report, indent=2))
    print(scene, "exhaustive (hloc-style)", report["recall"], report["median_translation_cm"], "cm",
          report["median_rotation_deg"], "deg, failed", report["failed"])
    return report


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenes", nargs="+", default=["7scenes-block"], choices=list(SCENES))
    a = ap.parse_args()
    for s in a.scenes:
        run(s)
