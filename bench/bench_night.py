"""The Sacre-Coeur night query on rebuilt maps: is its localization robust to the map?

    python bench/bench_night.py [--rebuilds 5] [--train-minutes 1] [--extra-set KEY=VALUE ...]

Rebuilds the Sacre-Coeur map (10 Flickr photos, structure-from-motion) ``--rebuilds``
times from scratch (its cache removed) with seeds 0..N-1 (``landmarks.seed``, which also
seeds SfM), each with a short recognizer training (``--train-minutes``, 1 by default, not
the preset's budget: the recognizer is weak), and localizes ``query/night.jpg`` through
``auto`` with no intrinsics given: they come from the photo's EXIF (35 mm-equivalent
focal) and the focal length is refined in PnP.

The night photo has no ground truth. A localization is counted correct when it has at
least ``--min-inliers`` inliers and the camera looks at the facade from among the day
photos: its centre lies within the spread of the map cameras around their centroid, and
its viewing direction is within 45 degrees of the nearest map camera's. Poses are
world-to-camera; the centre is ``-R^T t`` in the map's (arbitrary SfM) frame.

Structure-from-motion starts from an image pair with at least
``triangulation.sfm_init_min_tri_angle`` degrees of triangulation angle (8; pycolmap's
default 16 made 1 to 2 of 5 rebuilds end as a 2-image model: see bench/results/night_sfm16.json).

Writes bench/results/night.json; maps under bench/out/night/seed<K> (``--reuse-maps``:
localize again on them, e.g. after a change of the localizer, without rebuilding).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import DATA, OUT, RESULTS, stamp  # noqa: E402

SACRE = DATA / "sacre_coeur"
NIGHT = SACRE / "query" / "night.jpg"


def direction(pose) -> np.ndarray:
    """World-frame viewing direction (the camera's +z axis) of a world-to-camera pose."""
    return pose.R[2]


def check_pose(pose, map_poses: dict, names: list[str]) -> dict:
    """Where the night camera is relative to the map cameras (see the module docstring)."""
    centres = np.stack([map_poses[n].center for n in names])
    centroid = centres.mean(0)
    spread = float(np.max(np.linalg.norm(centres - centroid, axis=1)))
    c = pose.center
    dist = np.linalg.norm(centres - c, axis=1)
    nearest = int(np.argmin(dist))
    angle = float(np.degrees(np.arccos(np.clip(direction(pose) @ direction(map_poses[names[nearest]]), -1, 1))))
    return {"camera_centre": np.round(c, 4).tolist(),
            "distance_to_centroid": round(float(np.linalg.norm(c - centroid)), 4),
            "map_camera_spread": round(spread, 4), "nearest_map_image": names[nearest],
            "distance_to_nearest": round(float(dist[nearest]), 4), "angle_to_nearest_deg": round(angle, 1),
            "among_map_cameras": bool(np.linalg.norm(c - centroid) <= spread and angle <= 45.0)}


def rebuild(seed: int, train_minutes: float, extra: list[str]) -> Path:
    from pramloc import build, datasets
    from pramloc.config import load_config

    out = OUT / "night" / f"seed{seed}"
    shutil.rmtree(build.cache_dir(out), ignore_errors=True)  # a rebuild: features and SfM again
    conf = load_config("outdoor", [f"landmarks.seed={seed}", *extra])
    conf.recognizer.train_minutes = train_minutes
    build.main(conf, datasets.load_images(SACRE / "images"), out, overwrite=True)
    return out


def run(rebuilds: int, train_minutes: float, min_inliers: int, extra: list[str], reuse: bool = False) -> dict:
    from pramloc.localize import Localizer
    from pramloc.mapio import load_map

    runs = []
    for seed in range(rebuilds):
        out = OUT / "night" / f"seed{seed}" if reuse else rebuild(seed, train_minutes, extra)
        m = load_map(out)
        man = m.manifest
        r = Localizer(m, "auto").localize(NIGHT, None, NIGHT.name)
        rec = {"seed": seed, "registered_images": man["stats"]["model"]["registered_images"],
               "points": man["counts"]["points"], "landmarks": man["counts"]["landmarks"],
               "recognizer_val_keypoint_accuracy": (man.get("recognizer") or {}).get("val_keypoint_accuracy"),
               "path": r.path, "inliers": r.num_inliers, "matches": r.num_matches,
               "refined_matches": r.num_refined_matches, "pose_from": r.pose_from, "intrinsics": r.intrinsics,
               "focal_initial": r.focal_initial, "focal_refined": r.focal, "notes": r.notes, "reason": r.reason,
               "time_ms": round(sum(r.times_ms.values()))}
        if r.pose is not None:
            rec.update(check_pose(r.pose, dict(zip(m.image_names, m.poses)), m.image_names))
        rec["correct"] = bool(r.pose is not None and r.num_inliers >= min_inliers and rec["among_map_cameras"])
        print(json.dumps({k: rec[k] for k in ("seed", "landmarks", "path", "inliers", "matches", "refined_matches",
                                              "focal_refined", "correct")}), flush=True)
        runs.append(rec)
    return {**stamp(), "query": str(NIGHT.relative_to(DATA)), "mode": "auto", "train_minutes": train_minutes,
            "extra_set": extra, "reused_maps": reuse, "min_inliers_for_correct": min_inliers,
            "correct": sum(r["correct"] for r in runs), "rebuilds": rebuilds, "runs": runs}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rebuilds", type=int, default=5)
    ap.add_argument("--train-minutes", type=float, default=1.0, help="Recognizer budget per rebuild (short).")
    ap.add_argument("--min-inliers", type=int, default=100, help="Inliers of a localization counted correct.")
    ap.add_argument("--extra-set", nargs="*", default=[], metavar="SECTION.KEY=VALUE", help="More build overrides.")
    ap.add_argument("--out", type=Path, default=RESULTS / "night.json")
    ap.add_argument("--reuse-maps", action="store_true",
                    help="Localize again on the maps of the previous run (bench/out/night/seed<K>) instead of rebuilding.")
    args = ap.parse_args()
    report = run(args.rebuilds, args.train_minutes, args.min_inliers, args.extra_set, args.reuse_maps)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"night.jpg: {report['correct']}/{report['rebuilds']} correct -> {args.out}")
