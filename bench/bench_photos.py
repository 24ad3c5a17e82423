"""A real photo collection: COLMAP's South Building (112 map photos, 16 queries) mapped
from the images alone and from the reference poses, side by side with COLMAP's own
pipeline on the same photos, in one run.

    python bench/bench_photos.py [--steps colmap images images64 reference] [--reuse-maps]

Steps (each in its own process, so that its peak memory is its own):

- ``colmap``: what a user would otherwise run, pycolmap with its defaults: ``extract_features``
  (SIFT), ``match_exhaustive``, ``incremental_mapping``; time per stage, registered photos,
  its map images' camera centres against the reference (after alignment), size on disk.
- ``images``: ``pramloc build-map --images`` (outdoor preset) of the 112 photos alone; then
  the 16 queries in each mode, aligned to the reference (``evaluate --align``).
- ``images64``: the same build of the first 64 of the 112 photos (how the cost grows).
- ``reference``: ``pramloc build-map --colmap`` with the reference poses of the 112 photos.

Queries get no intrinsics: a photo of a camera the map knows (same EXIF camera) is
localized with the map's calibrated camera. Writes bench/results/photos_south-building.json;
maps under bench/out/photos/.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import DATA, OUT, RESULTS, stamp  # noqa: E402

SOUTH = DATA / "south_building"
IMAGES, REFERENCE = SOUTH / "images", SOUTH / "reference"
DB, QUERIES = SOUTH / "splits/db.txt", SOUTH / "splits/query.txt"
WORK = OUT / "photos"
MODES = ("auto", "recognition", "retrieval")
STEPS = ("colmap", "images", "images64", "reference")
# hloc-SIFT on this split (issue 22; its SfM from the 112 photos with exhaustive pairs, queries
# matched to all 112, aligned the same way), measured on this kind of machine by the author.
HLOC = {"registered": "112/112", "within_0.05_5deg": "16/16", "median_translation": 0.0018, "median_rotation_deg": 0.037,
        "features_s": 62, "matching_s": 1890, "mapping_s": 76, "pairs": 6216}


def names(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def peak_memory() -> dict:
    """Peak resident memory (MB) of this process and of the largest of its worker processes."""
    return {"peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "peak_rss_workers_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)}


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def align_record(poses: dict) -> dict:
    """The alignment of map-image poses (name -> Pose) to the reference (evaluate's)."""
    from pramloc.evaluate import align_to_reference, load_ground_truth

    gt, _ = load_ground_truth(gt_model=REFERENCE)
    return align_to_reference(poses, gt)[1]


# ---------------------------------------------------------------- steps (one process each)

def step_colmap() -> dict:
    """COLMAP's pipeline with pycolmap's defaults on the 112 map photos."""
    import pycolmap

    from pramloc.geometry import Pose

    work = WORK / "colmap"
    shutil.rmtree(work, ignore_errors=True)
    (work / "sparse").mkdir(parents=True)
    db = work / "database.db"
    times = {}
    t = time.perf_counter()
    pycolmap.extract_features(db, IMAGES, image_names=names(DB))
    times["features"] = time.perf_counter() - t
    t = time.perf_counter()
    pycolmap.match_exhaustive(db)
    times["matching"] = time.perf_counter() - t
    t = time.perf_counter()
    models = pycolmap.incremental_mapping(db, IMAGES, work / "sparse")
    times["mapping"] = time.perf_counter() - t
    rec = max(models.values(), key=lambda r: r.num_reg_images())
    poses = {im.name: Pose.from_pycolmap(im.cam_from_world()) for im in rec.images.values() if im.has_pose}
    with pycolmap.Database.open(str(db)) as d:
        pairs, verified = d.num_matched_image_pairs(), d.num_verified_image_pairs()
    return {"timings": {k: round(v, 1) for k, v in times.items()}, "total_s": round(sum(times.values()), 1),
            "registered": len(poses), "images": len(names(DB)), "pairs": pairs, "verified_pairs": verified,
            "points3D": rec.num_points3D(), "disk_bytes": dir_size(work),
            "alignment": align_record(poses), **peak_memory()}


def build_and_localize(tag: str, photos: list[str], colmap: bool, reuse: bool) -> dict:
    """``pramloc build-map`` (outdoor preset) of ``photos`` (from the images alone, or with
    the reference poses), then the queries in every mode, evaluated (aligned when needed)."""
    from pramloc import build, mapio
    from pramloc.build import cache_dir
    from pramloc.config import load_config
    from pramloc.datasets import load_colmap, load_images
    from pramloc.evaluate import align_results, evaluate, load_ground_truth
    from pramloc.io import read_poses
    from pramloc.localize import main as localize, query_list
    from pramloc.mapio import load_map

    out = WORK / "maps" / tag
    split = WORK / f"{tag}_db.txt"
    split.parent.mkdir(parents=True, exist_ok=True)
    split.write_text("\n".join(photos) + "\n")
    result: dict = {"photos": len(photos), "source": "reference poses (--colmap)" if colmap else "images alone"}
    if not (reuse and out.exists()):
        shutil.rmtree(cache_dir(out), ignore_errors=True)  # a cold build
        scene = load_colmap(IMAGES, REFERENCE, split) if colmap else load_images(IMAGES, split)
        t = time.perf_counter()
        man = build.main(load_config("outdoor"), scene, out, overwrite=True, workers=os.cpu_count() or 1)
        result["wall_s"] = round(time.perf_counter() - t, 1)
    man = load_map(out).manifest
    result.update(timings=man["timings"], build_s=round(sum(man["timings"].values()), 1),
                  peak_memory_mb=man["peak_memory_mb"], map_bytes=sum(mapio.part_sizes(out).values()),
                  counts=man["counts"], registered=man["stats"]["model"]["registered_images"],
                  stats={k: v for k, v in man["stats"].items() if k != "model"}, model=man["stats"]["model"],
                  recognizer={k: v for k, v in (man.get("recognizer") or {}).items() if k != "history"})
    gt, qnames = load_ground_truth(gt_model=REFERENCE, queries=QUERIES)
    queries = query_list(images=IMAGES, queries=QUERIES)
    result["localize"] = {}
    for mode in MODES:
        res_path = WORK / "results" / f"{tag}_{mode}.txt"
        summary = localize(out, queries, res_path, mode, workers=1)
        logs = [json.loads(line) for line in res_path.with_name(f"{res_path.stem}_log.jsonl").read_text().splitlines()]
        poses = {n: p for n, p in read_poses(res_path).items()}
        rec = {}
        if not colmap:
            poses, rec = align_results(poses, out, gt)
        m = evaluate(poses, gt, queries=qnames)
        total = sorted(sum(r["times"].values()) for r in logs)
        no_feat = sorted(sum(v for k, v in r["times"].items() if k != "features") for r in logs)
        result["localize"][mode] = {
            "localized": m["num_localized"], "queries": m["num_queries"],
            "median_translation": m["median_translation"], "median_rotation_deg": m["median_rotation_deg"],
            "recall": {f"{r['translation']:g},{r['rotation_deg']:g}": r["recall"] for r in m["recall"]},
            "paths": {p: sum(r["path"] == p for r in logs) for p in ("recognition", "retrieval", "failed")},
            "intrinsics": sorted({r["intrinsics"] for r in logs}),
            "median_ms": round(total[len(total) // 2], 1), "median_ms_after_features": round(no_feat[len(no_feat) // 2], 1),
            "alignment": rec, "wall_s": summary["wall_s"]}
    return {**result, **peak_memory()}


def step(name: str, reuse: bool) -> dict:
    db = names(DB)
    if name == "colmap":
        return step_colmap()
    if name == "images":
        return build_and_localize("images112", db, colmap=False, reuse=reuse)
    if name == "images64":
        return build_and_localize("images64", db[:64], colmap=False, reuse=reuse)
    if name == "reference":
        return build_and_localize("reference112", db, colmap=True, reuse=reuse)
    raise SystemExit(f"unknown step {name!r}")


# ---------------------------------------------------------------- driver

def run(steps: list[str], reuse: bool) -> dict:
    path = RESULTS / "photos_south-building.json"
    report = json.loads(path.read_text()) if path.exists() else {}
    report.update(stamp(), scene="south_building", hloc=HLOC)
    report.setdefault("steps", {})
    for name in steps:
        print(f"[bench_photos] {name} ...", flush=True)
        out = WORK / f"step_{name}.json"
        t = time.perf_counter()
        subprocess.run([sys.executable, __file__, "--child", name, "--child-out", str(out)]
                       + (["--reuse-maps"] if reuse else []), check=True)
        report["steps"][name] = {**json.loads(out.read_text()), "step_wall_s": round(time.perf_counter() - t, 1),
                                 **stamp()}
        print(json.dumps({k: v for k, v in report["steps"][name].items() if k in ("timings", "total_s", "build_s",
                                                                                 "registered", "alignment")}),
              flush=True)
    s = report["steps"]
    if "colmap" in s and "images" in s:
        report["build_vs_colmap"] = round(s["images"]["build_s"] / s["colmap"]["total_s"], 3)
    if "images" in s and "images64" in s:
        report["growth_112_vs_64"] = round(s["images"]["build_s"] / s["images64"]["build_s"], 3)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1) + "\n")
    return report


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", nargs="+", default=list(STEPS), choices=STEPS)
    ap.add_argument("--reuse-maps", action="store_true", help="Localize against the maps of an earlier run.")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--child-out", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        WORK.mkdir(parents=True, exist_ok=True)
        Path(a.child_out).write_text(json.dumps(step(a.child, a.reuse_maps), indent=1))
    else:
        run(a.steps, a.reuse_maps)
