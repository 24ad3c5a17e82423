"""Where the errors come from: every query of a localization run (the JSON-lines logs of
bench/bench_localize.py) put in one cause, against the ground truth.

    python bench/bench_failures.py [--scenes 7scenes-block] [--results DIR] [--map DIR] [--tag after]

Causes, in this order (the first that applies):

- ``within 5cm/5deg``: localized within 5 cm and 5 degrees;
- ``ground truth off``: localized, not within 5 cm/5 degrees of the ground truth but within
  5 cm/5 degrees of the pose refined on the images themselves with the map frames held at
  their ground truth (bench/bench_gt_check.py; only where it was run: "-" otherwise);
- ``inaccurate pose``: localized within 50 cm and 10 degrees, but not within 5 cm/5 degrees;
- ``wrong pose accepted``: localized, more than 50 cm or 10 degrees off;
- ``no landmark recognized``: failed, the recognizer was unsure (too few votes);
- ``wrong landmarks``: failed, the query's dominant landmark (the one with the most
  visible map points from its true pose, as in bench/bench_recognition.py) is not among the
  landmarks matched;
- ``right landmarks, too few inliers``: failed, the dominant landmark was matched;
- ``wrong images retrieved`` / ``right images, too few inliers``: failed on the retrieval
  path (``retrieval`` mode), no / some retrieved map image within 0.5 m and 30 degrees.

A failure in ``auto`` mode is put in the recognition cause (both paths failed).
Writes bench/results/failures_<scene>[_<tag>].json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import OUT, RESULTS, SCENES, map_held_poses, stamp  # noqa: E402

CAUSES = ("within 5cm/5deg", "ground truth off", "inaccurate pose", "wrong pose accepted", "no landmark recognized",
          "wrong landmarks", "right landmarks, too few inliers", "wrong images retrieved",
          "right images, too few inliers")


def dominant_landmarks(scene: str, map_dir: Path) -> dict[str, int]:
    """Per query: the landmark with the most visible map points from its true pose."""
    from bench_recognition import gt_points

    from pramloc.datasets import load_dataset
    from pramloc.landmarks import visible_points
    from pramloc.mapio import load_map

    kind, root, _, qsplit, _ = SCENES[scene]
    m = load_map(map_dir)
    xyz, lm = gt_points(map_dir, m)
    out = {}
    for im in load_dataset(kind, root, qsplit).images:
        _, vis = visible_points(im.camera, im.pose, xyz, lm)
        out[im.name] = int(np.argmax(np.bincount(vis, minlength=m.num_landmarks))) if len(vis) else -1
    return out


def cause(rec: dict, gt, dominant: int, map_poses: dict, held=None, max_distance: float = 0.5,
          max_angle: float = 30.0) -> str:
    """The cause of one query's outcome (see the module docstring); ``held``: the query's
    map-held pose of bench/bench_gt_check.py, if known."""
    from pramloc.evaluate import pose_errors, viewing_direction
    from pramloc.geometry import Pose

    if rec["pose"] is not None:
        pose = Pose(np.array(rec["pose"]["qvec"]), np.array(rec["pose"]["tvec"]))
        t, r = pose_errors(pose, gt)
        if t <= 0.05 and r <= 5:
            return CAUSES[0]
        if held is not None:
            th, rh = pose_errors(pose, held)
            if th <= 0.05 and rh <= 5:
                return CAUSES[1]
        return CAUSES[2] if t <= 0.5 and r <= 10 else CAUSES[3]
    if rec["landmarks"] or "recognition unsure" in rec["reason"]:
        if "recognition unsure" in rec["reason"]:
            return CAUSES[4]
        return CAUSES[6] if dominant in rec["landmarks"] else CAUSES[5]
    cos = np.cos(np.radians(max_angle))
    right = any(np.linalg.norm(map_poses[n].center - gt.center) <= max_distance
                and viewing_direction(map_poses[n]) @ viewing_direction(gt) >= cos for n in rec["retrieved"])
    return CAUSES[8] if right else CAUSES[7]


RUNS = ("recognition", "retrieval", "auto", "xfeat_auto")  # <scene>_<run>_log.jsonl of bench_localize / bench_features


def run(scene: str, results: Path | None = None, map_dir: Path | None = None, tag: str = "",
        runs: tuple[str, ...] = RUNS) -> dict:
    from pramloc.datasets import load_dataset
    from pramloc.mapio import load_map

    kind, root, _, qsplit, _ = SCENES[scene]
    results = Path(results or OUT / "results")
    map_dir = Path(map_dir or OUT / "maps" / scene)
    gt = {im.name: im.pose for im in load_dataset(kind, root, qsplit).images}
    m = load_map(map_dir)
    map_poses = dict(zip(m.image_names, m.poses))
    dominant = dominant_landmarks(scene, map_dir)
    held = map_held_poses(scene)
    report = {**stamp(), "scene": scene, "results": str(results), "tag": tag, "map_held": bool(held), "modes": {}}
    for mode in runs:
        log = results / f"{scene}_{mode}_log.jsonl"
        if not log.exists():
            continue
        recs = [json.loads(line) for line in log.read_text().splitlines()]
        causes = [cause(r, gt[r["name"]], dominant[r["name"]], map_poses, held.get(r["name"])) for r in recs]
        report["modes"][mode] = {c: causes.count(c) for c in CAUSES}
        report["modes"][mode]["queries"] = len(recs)
        report["modes"][mode]["per_query"] = dict(zip((r["name"] for r in recs), causes))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"failures_{scene}{'_' + tag if tag else ''}.json").write_text(json.dumps(report, indent=2))
    for mode, counts in report["modes"].items():
        print(scene, tag, mode, {c: counts[c] for c in CAUSES if counts[c]})
    return report


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenes", nargs="+", default=["7scenes-block"], choices=list(SCENES))
    ap.add_argument("--results", type=Path, default=None, help="Folder of <scene>_<mode>_log.jsonl files.")
    ap.add_argument("--map", type=Path, default=None, help="Map folder (default: bench/out/maps/<scene>).")
    ap.add_argument("--tag", default="", help="Suffix of the output file, e.g. 'before'.")
    ap.add_argument("--runs", nargs="+", default=list(RUNS), help="Logs <scene>_<run>_log.jsonl to analyse.")
    a = ap.parse_args()
    for s in a.scenes:
        run(s, a.results, a.map, a.tag, tuple(a.runs))
