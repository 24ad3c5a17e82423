"""Growing maps (issue 24): a map grown by ``update-map`` against the same map built from
scratch from all its photos, and against the map before the update, in one run.

    python bench/bench_update.py [--scenes 7scenes-block strecha] [--reuse-ungrown] [--no-poseless]
                                 [--agreement-only]

Scenes (the split lists are derived here and written under bench/out/update/<scene>/):

- ``7scenes-block``: the block map (``splits/block_db.txt``: every frame of the data below
  600, i.e. every 3rd frame of the sequence), grown with the frames of 600-799 by the same
  rule (every frame of the data in 600-799: 600, 603, ..., 798, 67 frames); queries: the
  block queries of frames >= 800 (801, ..., 999, 67 frames).
- ``strecha``: the map of the first half of ``splits/db.txt`` (0000-0012, 7 images), grown
  with the other half (0014-0024, 6 images); queries: ``splits/query.txt`` (12).

For each: the ungrown map (built here, or reused from bench/out/update with
``--reuse-ungrown``, its build cache included: the update reads the map images' features
from it, as on the machine that built the map), ``update-map`` with the dataset's poses,
``update-map`` with the poses left out (registered against the map; the dataset's
intrinsics kept), and a cold build from scratch of all the map photos; then the queries
localized (mode auto) on the ungrown, grown and from-scratch maps; and, for the new photos,
how far apart their pose estimates lie (the dataset's, the map-held ones, the ungrown map's
localization, ``update-map``'s registration: :func:`agreement`). Writes
bench/results/update_<scene>.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import KITCHEN, OUT, RESULTS, SCENES, STRECHA, map_held_poses, stamp  # noqa: E402

WORK = OUT / "update"


def _frame(name: str) -> int:
    return int(Path(name).name.split("-")[1].split(".")[0])


def splits(scene: str) -> dict[str, list[str]]:
    """The old map's photos, the new photos, all of them, and the queries (names)."""
    from pramloc.io import read_image_list

    if scene == "7scenes-block":
        old = read_image_list(KITCHEN / "splits/block_db.txt")
        present = sorted(f"rgb/{p.name}" for p in (KITCHEN / "rgb").glob("frame-*.color.jpg"))
        # block_db.txt = every frame of the data below 600: the same rule on 600-799
        new = [n for n in present if 600 <= _frame(n) < 800]
        queries = [n for n in read_image_list(KITCHEN / "splits/block_query.txt") if _frame(n) >= 800]
    elif scene == "strecha":
        db = read_image_list(STRECHA / "splits/db.txt")
        half = (len(db) + 1) // 2
        old, new = db[:half], db[half:]
        queries = read_image_list(STRECHA / "splits/query.txt")
    else:
        raise SystemExit(f"unknown scene {scene}")
    return {"old": old, "new": new, "all": old + new, "queries": queries}


def write_split(path: Path, names: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(n + "\n" for n in names))
    return path


def copy_map(src: Path, dst: Path) -> Path:
    """A copy of a map folder and of its build cache (the features the update reuses)."""
    from pramloc.build import cache_dir

    for s, d in ((src, dst), (cache_dir(src), cache_dir(dst))):
        shutil.rmtree(d, ignore_errors=True)
        if s.exists():
            shutil.copytree(s, d)
    return dst


def build_map(kind: str, root: Path, split: Path, preset: str, out: Path) -> float:
    """A cold build (no cache) as `pramloc build-map` runs it; returns the wall time (s)."""
    from pramloc import build
    from pramloc.config import load_config
    from pramloc.datasets import load_dataset
    from pramloc.parallel import num_cores

    shutil.rmtree(build.cache_dir(out), ignore_errors=True)
    t = time.perf_counter()
    build.main(load_config(preset), load_dataset(kind, root, split), out, overwrite=True, workers=num_cores())
    return time.perf_counter() - t


def _accuracy(results: dict, ref: dict, names: list[str]) -> dict:
    from pramloc.evaluate import evaluate

    ev = evaluate({n: results[n] for n in names if n in results}, ref, queries=names)
    return {"recall": {f"{t['translation']}m,{t['rotation_deg']}deg": round(100 * t["recall"], 1) for t in ev["recall"]},
            "median_translation_cm": round(ev["median_translation"] * 100, 2),
            "median_rotation_deg": round(ev["median_rotation_deg"], 3), "failed": len(ev["missing"])}


def localize(map_dir: Path, queries, held: dict) -> dict:
    """Accuracy (mode auto) of ``queries`` (a Scene with ground truth) on ``map_dir``; with
    ``held`` (bench/bench_gt_check.py's map-held poses), also against those under
    ``vs_map_held``."""
    from pramloc.localize import Localizer

    loc = Localizer(map_dir, "auto")
    results = {}
    for im in queries.images:
        r = loc.localize(queries.path(im.name), im.camera, im.name)
        if r.pose is not None:
            results[im.name] = r.pose
    names = [im.name for im in queries.images]
    out = _accuracy(results, {im.name: im.pose for im in queries.images}, names)
    if held:
        out["vs_map_held"] = _accuracy(results, held, [n for n in names if n in held])
    return out


def pose_errors(map_dir: Path, gt: dict) -> dict:
    """Errors of the poses the grown map holds for the registered photos against ``gt``
    (the dataset's poses, or the map-held ones)."""
    import numpy as np

    from pramloc.evaluate import pose_errors as errors
    from pramloc.mapio import load_map

    m = load_map(map_dir)
    t, r = [], []
    for n, p in zip(m.image_names, m.poses):
        if n in gt:
            dt, dr = errors(p, gt[n])
            t.append(dt)
            r.append(dr)
    return {"photos": len(t), "median_translation_cm": round(float(np.median(t)) * 100, 2),
            "max_translation_cm": round(float(np.max(t)) * 100, 2),
            "median_rotation_deg": round(float(np.median(r)), 3), "max_rotation_deg": round(float(np.max(r)), 3)}


def agreement(scene: str) -> dict:
    """For the new photos: how far apart each pair of their pose estimates lies (median and
    p90 of the camera-centre distance in cm and of the rotation angle in degrees): the dataset's
    poses, the map-held ones (bench/bench_gt_check.py), the ungrown map's localization of them
    (mode auto) and the poses ``update-map`` registered for them (the grown_poseless map).
    Needs the maps of a previous run (bench/out/update/<scene>/)."""
    import itertools

    import numpy as np

    from pramloc.datasets import load_dataset
    from pramloc.evaluate import pose_errors as errors
    from pramloc.localize import Localizer
    from pramloc.mapio import load_map

    kind, root, _, _, _ = SCENES[scene]
    d = WORK / scene
    new_scene = load_dataset(kind, root, d / "splits" / "new.txt")
    names = [im.name for im in new_scene.images]
    loc = Localizer(d / "ungrown", "auto")
    registered = load_map(d / "grown_poseless")
    poses = {"ground truth": {im.name: im.pose for im in new_scene.images},
             "map-held": map_held_poses(scene),
             "localized on the ungrown map": {im.name: loc.localize(new_scene.path(im.name), im.camera, im.name).pose
                                              for im in new_scene.images},
             "registered by update-map": dict(zip(registered.image_names, registered.poses))}
    out = {}
    for a, b in itertools.combinations([k for k, v in poses.items() if v], 2):
        e = np.array([errors(poses[a][n], poses[b][n]) for n in names
                      if poses[a].get(n) is not None and poses[b].get(n) is not None])
        out[f"{a} vs {b}"] = {"photos": len(e), "median_cm": round(100 * float(np.median(e[:, 0])), 2),
                              "p90_cm": round(100 * float(np.percentile(e[:, 0], 90)), 2),
                              "median_deg": round(float(np.median(e[:, 1])), 3),
                              "p90_deg": round(float(np.percentile(e[:, 1], 90)), 3)}
        print(scene, f"{a} vs {b}", out[f"{a} vs {b}"], flush=True)
    return out


def run(scene: str, reuse: bool, poseless: bool) -> dict:
    from pramloc import update
    from pramloc.datasets import load_dataset
    from pramloc.parallel import num_cores

    kind, root, _, _, preset = SCENES[scene]
    s = splits(scene)
    d = WORK / scene
    sp = {k: write_split(d / "splits" / f"{k}.txt", v) for k, v in s.items()}
    queries = load_dataset(kind, root, sp["queries"])
    held = map_held_poses(scene)  # {} where bench/bench_gt_check.py was not run (Strecha: none)
    report = {**stamp(), "scene": scene, "photos": {k: len(v) for k, v in s.items()}, "splits": {k: str(v) for k, v in sp.items()}}
    ungrown = d / "ungrown"
    if not (reuse and (ungrown / "manifest.json").exists()):
        report["ungrown_build_s"] = round(build_map(kind, root, sp["old"], preset, ungrown), 1)
    variants = [("grown", True)] + ([("grown_poseless", False)] if poseless else [])
    new_scene = load_dataset(kind, root, sp["new"])
    for name, use_poses in variants:
        out = copy_map(ungrown, d / name)
        t = time.perf_counter()
        r = update.main(out, new_scene, device=None, workers=num_cores(), use_poses=use_poses)
        wall = time.perf_counter() - t
        report[name] = {"update_s": round(wall, 1), "timings": {k: round(v, 2) for k, v in r["timings"].items()},
                        "images_added": len(r["images_added"]), "unregistered": r["unregistered"],
                        "points_added": r["points_added"], "landmarks_added": r["landmarks_added"],
                        "counts": r["manifest"]["counts"],
                        "recognizer": {k: v for k, v in r["manifest"].get("recognizer", {}).items()
                                       if not isinstance(v, (list, dict))}}
        if not use_poses:
            report[name]["registered_pose_errors"] = pose_errors(out, {im.name: im.pose for im in new_scene.images})
            if held:  # the new photos only (the old ones keep their poses)
                report[name]["registered_pose_errors_vs_map_held"] = pose_errors(
                    out, {im.name: held[im.name] for im in new_scene.images if im.name in held})
        print(scene, name, json.dumps({k: report[name][k] for k in ("update_s", "timings", "points_added",
                                                                    "landmarks_added", "counts")}), flush=True)
    scratch = d / "scratch"
    report["scratch_build_s"] = round(build_map(kind, root, sp["all"], preset, scratch), 1)
    from pramloc.mapio import read_manifest

    report["scratch"] = {"timings": read_manifest(scratch)["timings"], "counts": read_manifest(scratch)["counts"]}
    print(scene, "scratch build", report["scratch_build_s"], "s", flush=True)
    for name, _ in variants:
        report[name]["update_share_of_scratch_build"] = round(report[name]["update_s"] / report["scratch_build_s"], 3)
    report["accuracy"] = {}
    for name in ["ungrown", *(v for v, _ in variants), "scratch"]:
        report["accuracy"][name] = localize(d / name, queries, held)
        print(scene, name, report["accuracy"][name], flush=True)
    if poseless:
        report["agreement"] = agreement(scene)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"update_{scene}.json").write_text(json.dumps(report, indent=2))
    return report


def markdown(report: dict) -> str:
    """The rows of docs/BENCHMARKS.md's table for one scene's report."""
    th = list(report["accuracy"]["scratch"]["recall"])
    lines = [f"| {report['scene']} map | " + " | ".join(th) + " | median cm / deg | failed | build or update s |",
             "|---|" + "---|" * (len(th) + 3)]
    labels = {"ungrown": "ungrown (old photos only)", "grown": "grown by update-map (poses given)",
              "grown_poseless": "grown by update-map (poses registered)", "scratch": "from scratch (all photos)"}
    for name, acc in report["accuracy"].items():
        t = (report[name]["update_s"] if name in ("grown", "grown_poseless") else
             report.get("scratch_build_s") if name == "scratch" else report.get("ungrown_build_s", ""))
        share = (f" ({100 * report[name]['update_share_of_scratch_build']:.0f}% of scratch)"
                 if name in ("grown", "grown_poseless") else "")
        lines.append(f"| {labels[name]} | " + " | ".join(f"{acc['recall'][k]:.1f}" for k in th)
                     + f" | {acc['median_translation_cm']:.1f} / {acc['median_rotation_deg']:.2f} | {acc['failed']} | "
                     f"{t}{share} |")
    return "\n".join(lines)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenes", nargs="+", default=["strecha", "7scenes-block"], choices=["7scenes-block", "strecha"])
    ap.add_argument("--reuse-ungrown", action="store_true", help="Reuse bench/out/update/<scene>/ungrown if built.")
    ap.add_argument("--no-poseless", action="store_true", help="Skip the update without poses.")
    ap.add_argument("--build-ungrown-only", action="store_true", help="Only build the ungrown maps.")
    ap.add_argument("--agreement-only", action="store_true",
                    help="Only measure how far apart the new photos' pose estimates lie, on the maps of a previous "
                         "run (added to its results file).")
    a = ap.parse_args()
    for sc in a.scenes:
        if a.agreement_only:
            path = RESULTS / f"update_{sc}.json"
            rep = json.loads(path.read_text())
            rep["agreement"] = {**stamp(), "pairs": agreement(sc)}
            path.write_text(json.dumps(rep, indent=2))
        elif a.build_ungrown_only:
            kind, root, _, _, preset = SCENES[sc]
            sp = write_split(WORK / sc / "splits" / "old.txt", splits(sc)["old"])
            print(sc, "ungrown build", round(build_map(kind, root, sp, preset, WORK / sc / "ungrown"), 1), "s")
        else:
            run(sc, a.reuse_ungrown, not a.no_poseless)

