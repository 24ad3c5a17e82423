"""How good is the ground truth of the query frames? Poses refined on the images themselves.

The 7-Scenes ground truth is the depth camera's KinectFusion trajectory. A localizer's
pose is found against a map triangulated from the *map* frames' ground truth, and judged
against the *query* frames' ground truth: where the two parts of the trajectory disagree,
no choice of matches can agree with both. This benchmark measures that disagreement
without any localizer:

1. SIFT features of every frame (map and queries, the map preset's extractor);
2. image pairs: the 20 nearest by ground-truth pose and the 2 next frames (only to choose
   which pairs to match), matched by mutual nearest neighbours with the ratio test and
   verified by RANSAC two-view geometry (pycolmap; no ground truth involved);
3. incremental structure-from-motion of all frames (``pramloc.sfm.reconstruct``), intrinsics fixed at the
   known ones;
4. ``sfm``: that model aligned to the ground truth by a robust similarity of the *map*
   frames' camera centres (only a starting point: centres along a handheld path leave the
   rotation about it loosely fixed, 5 degrees here);
5. ``map-held``: bundle adjustment of the aligned model (Cauchy loss) with every map frame
   held at its ground-truth pose, intrinsics fixed: the query poses that agree best, by
   reprojection error over all the images, with the map frames' ground truth, which is
   what the map is triangulated from.

For each query frame it reports the difference between its ground truth and its
``map-held`` pose, and the median reprojection error of the frame's own observations
under either pose (a pose that fits the image reprojects to a pixel or less), by stretch
of frames; then it evaluates localization results files against both. A results file far
more accurate against ``map-held`` than against the ground truth has the ground truth's
errors, not its own.

    python bench/bench_gt_check.py --results bench/out/results/7scenes-block_auto.txt ...

Writes bench/results/gt_check_<scene>.json and the refined poses to
bench/out/gt_check/<scene>_map_held.txt (``name qw qx qy qz tx ty tz``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, SCENES, map_held_path, stamp  # noqa: E402

def frame_number(name: str) -> int:
    return int(Path(name).name.split("-")[1].split(".")[0])


def image_consistent_poses(scene_name: str, work: Path, log=print) -> tuple:
    """Ground truth, ``sfm`` poses aligned on the map frames and ``map-held`` poses of every
    frame of ``scene_name``'s dataset (name -> world-to-camera :class:`pramloc.geometry.Pose`),
    the map frames' names, each frame's median reprojection error (px) of its own
    observations under the map-held and the ground-truth pose, and the models' statistics."""
    import pycolmap

    from pramloc.config import load_config
    from pramloc.datasets import apply_split, load_dataset
    from pramloc.features import main as extract
    from pramloc.geometry import Camera, Pose, project
    from pramloc.sfm import pairs_from_poses, reconstruct

    kind, root, db_split, _, preset = SCENES[scene_name]
    scene = load_dataset(kind, root)
    map_names = set(apply_split(scene.names, db_split, root))
    conf = load_config(preset)
    feats = extract(conf.features, scene.image_dir, scene.names, work / "features.h5")
    order = sorted(scene.names)
    pairs = set(pairs_from_poses(scene, 20, conf.triangulation.max_pair_distance, 60.0))
    pairs |= {(a, b) for k in (1, 2) for a, b in zip(order, order[k:])}
    log(f"{len(scene.names)} frames, {len(pairs)} pairs")
    # Poses ignored, the known intrinsics kept fixed.
    rec = reconstruct(scene, feats, work, conf.triangulation, pairs=sorted(pairs)).model
    log(f"SfM registered {rec.num_reg_images()}/{len(scene.names)} frames, {rec.num_points3D()} points, "
        f"{rec.compute_mean_reprojection_error():.2f} px")
    gt = {im.name: im.pose for im in scene.images}
    reg = {im.name: im for im in rec.images.values() if im.has_pose}
    anchors = sorted(n for n in reg if n in map_names)
    ransac = pycolmap.RANSACOptions()
    ransac.max_error = 0.05  # m, camera centres
    sim = pycolmap.align_reconstruction_to_locations(rec, anchors, np.stack([gt[n].center for n in anchors]),
                                                     3, ransac)
    rec.transform(sim)
    sfm = {n: Pose.from_pycolmap(im.cam_from_world()) for n, im in
           ((im.name, im) for im in rec.images.values() if im.has_pose)}
    # Bundle adjustment with the map frames held at their ground truth.
    config = pycolmap.BundleAdjustmentConfig()
    for im in rec.images.values():
        if not im.has_pose:
            continue
        config.add_image(im.image_id)
        config.set_constant_cam_intrinsics(im.camera_id)
        if im.name in map_names:
            rec.frames[im.frame_id].rig_from_world = gt[im.name].to_pycolmap()
            config.set_constant_rig_from_world_pose(im.frame_id)
    options = pycolmap.BundleAdjustmentOptions()
    options.refine_focal_length = options.refine_principal_point = options.refine_extra_params = False
    options.print_summary = False
    options.ceres.loss_function_type = pycolmap.LossFunctionType.CAUCHY  # robust to the held poses' misfits
    options.ceres.solver_options.max_num_iterations = 500
    summary = pycolmap.create_default_bundle_adjuster(options, config, rec).solve()
    stats = {"sfm_points": int(rec.num_points3D()), "sfm_registered": len(sfm),
             "map_held_termination": str(summary.termination_type).split(".")[-1]}
    log(f"map-held bundle adjustment: {stats}")
    held = {im.name: Pose.from_pycolmap(im.cam_from_world()) for im in rec.images.values() if im.has_pose}
    # Per image: median reprojection error of its own observations (points of the map-held
    # model) under the map-held pose and under the ground-truth pose.
    cams = {cid: Camera.from_pycolmap(c) for cid, c in rec.cameras.items()}
    reproj = {}
    for im in rec.images.values():
        if not im.has_pose:
            continue
        obs = [(p.xy, rec.points3D[p.point3D_id].xyz) for p in im.points2D if p.has_point3D()]
        xy = np.array([o[0] for o in obs]) - 0.5  # COLMAP pixel centres -> keypoint convention
        xyz = np.array([o[1] for o in obs])
        reproj[im.name] = {k: float(np.median(np.linalg.norm(project(cams[im.camera_id], pose, xyz)[0] - xy, axis=1)))
                           for k, pose in (("map_held", held[im.name]), ("ground_truth", gt[im.name]))}
    return gt, sfm, held, map_names, reproj, stats


def recall(results: dict, ref: dict, names: list[str]) -> dict:
    """Percent of ``names`` whose pose in ``results`` is within each threshold of ``ref``
    (:func:`pramloc.evaluate.evaluate`; a name without a pose in ``results`` is a miss, one
    without a pose in ``ref`` is left out)."""
    from pramloc.evaluate import evaluate

    names = [n for n in names if n in ref]
    ev = evaluate({n: results[n] for n in names if n in results}, ref, queries=names)
    return {f"{t['translation']}m,{t['rotation_deg']}deg": round(100 * t["recall"], 1) for t in ev["recall"]}


def stretches(names: list[str], size: int = 60) -> dict[str, list[str]]:
    """Query names grouped by stretches of ``size`` frames (600-659, 660-719, ...)."""
    out: dict[str, list[str]] = {}
    for n in sorted(names, key=frame_number):
        f = frame_number(n)
        start = f // size * size
        out.setdefault(f"{start}-{start + size - 1}", []).append(n)
    return out


def main(scene_name: str, results: list[Path]) -> dict:
    from pramloc.datasets import apply_split, load_dataset
    from pramloc.evaluate import pose_errors as errors
    from pramloc.evaluate import read_results
    from pramloc.io import write_poses

    kind, root, _, qsplit, _ = SCENES[scene_name]
    work = Path(tempfile.mkdtemp(prefix="pramloc-gtcheck-"))
    gt, sfm, held, map_names, reproj, stats = image_consistent_poses(scene_name, work)
    scene = load_dataset(kind, root)
    queries = apply_split(scene.names, qsplit, root)
    write_poses(map_held_path(scene_name), held)
    write_poses(map_held_path(scene_name).with_name(f"{scene_name}_sfm.txt"), sfm)
    report = {**stamp(), "scene": scene_name, "frames": len(gt), **stats,
              "map_frames_vs_sfm": {}, "queries": {}, "results": {}}
    # Map frames are held at their ground truth: how well it agrees with their own images.
    report["map_frames_reprojection_px"] = round(float(np.median([reproj[n]["ground_truth"] for n in map_names
                                                                   if n in reproj])), 2)
    maps = [n for n in sfm if n in map_names]
    e = np.array([errors(sfm[n], gt[n]) for n in maps])
    report["map_frames_vs_sfm"] = {"frames": len(maps), "median_cm": round(float(np.median(e[:, 0])) * 100, 2),
                                   "p90_cm": round(float(np.percentile(e[:, 0], 90)) * 100, 2),
                                   "median_deg": round(float(np.median(e[:, 1])), 2)}
    groups = stretches(queries)
    for label, names in [("all", queries), *groups.items()]:
        ok = [errors(held[n], gt[n]) for n in names if n in held]
        report["queries"][label] = {
            "queries": len(names), "refined": len(ok),
            "gt_vs_map_held_median_cm": round(float(np.median([x[0] for x in ok])) * 100, 2) if ok else None,
            "gt_vs_map_held_median_deg": round(float(np.median([x[1] for x in ok])), 2) if ok else None,
            "gt_within_5cm5deg_of_map_held": recall(held, gt, names)["0.05m,5.0deg"],
            "reprojection_px_map_held": round(float(np.median([reproj[n]["map_held"] for n in names])), 2),
            "reprojection_px_ground_truth": round(float(np.median([reproj[n]["ground_truth"] for n in names])), 2)}
    for path in results:
        est = read_results(path, gt)
        row = {}
        for label, names in [("all", queries), *groups.items()]:
            row[label] = {"vs_ground_truth": recall(est, gt, names), "vs_map_held": recall(est, held, names)}
        report["results"][path.stem] = row
        print(f"{path.stem}: 5cm/5deg vs ground truth {row['all']['vs_ground_truth']['0.05m,5.0deg']}%, "
              f"vs map-held {row['all']['vs_map_held']['0.05m,5.0deg']}%")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"gt_check_{scene_name}.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report["queries"], indent=1))
    return report


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scene", default="7scenes-block", choices=[s for s in SCENES if s.startswith("7scenes")])
    ap.add_argument("--results", nargs="*", type=Path, default=[], help="results files to evaluate against both")
    a = ap.parse_args()
    main(a.scene, a.results)
