"""Absolute pose from 2D-3D correspondences (pycolmap LO-RANSAC P3P, then the non-linear
refinement on its inliers: PoseLib's, or pycolmap's where the focal length is refined too),
and a second pass that re-matches the map points projected with a first pose.

Conventions: poses are world-to-camera (:class:`pramloc.geometry.Pose`); 2D points are
in the keypoint convention of the features files (centre of the top-left pixel at
(0, 0)); COLMAP puts that centre at (0.5, 0.5), so 0.5 is added before pycolmap.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.spatial import cKDTree

from .errors import PramlocError
from .geometry import Camera, Pose, project

MIN_POINTS = 4  # P3P uses 3; a fourth point is needed to reject wrong solutions


@dataclass
class PoseEstimate:
    """A camera pose (world-to-camera) with its RANSAC support.

    ``inlier_mask`` (N,) refers to the N correspondences the pose was estimated from
    (``num_inliers`` of N); for :func:`refine_by_projection` these are ``matches`` (N, 2)
    rows of (query keypoint index, map point index). ``camera``: the camera the pose was
    estimated with, its focal length refined when it was estimated with ``refine_focal``.
    """

    pose: Pose
    num_inliers: int
    inlier_mask: np.ndarray
    matches: np.ndarray | None = None
    camera: Camera | None = None


def solve_pose(points2D: np.ndarray, points3D: np.ndarray, camera: Camera, max_error_px: float,
               min_inliers: int, seed: int | None = 0, refine_focal: bool = False,
               threshold: str = "min_inliers", refine: bool = True) -> tuple[PoseEstimate | None, str]:
    """Robust absolute pose: pycolmap's LO-RANSAC (``estimate_absolute_pose``), then the
    non-linear refinement on its inliers (:func:`refine_pose`), unless ``refine=False``
    (for a first pose that a second pass refines anyway).

    points2D: (N, 2) pixels, keypoint convention; points3D: (N, 3) world coordinates;
    max_error_px: RANSAC reprojection threshold; ``seed`` makes RANSAC deterministic
    (None: random); ``refine_focal``: the focal length of ``camera`` is refined with the
    pose (for estimated intrinsics; the estimate's ``camera`` carries it; implies
    ``refine``). Returns the
    estimate and "", or None and why, naming the threshold missed (``min_inliers`` is
    called ``threshold`` there): fewer than 4 correspondences, fewer than ``min_inliers``
    of them, RANSAC finding no pose, or fewer than ``min_inliers`` inliers.
    """
    import pycolmap

    p2 = np.asarray(points2D, dtype=np.float64).reshape(-1, 2)
    p3 = np.asarray(points3D, dtype=np.float64).reshape(-1, 3)
    if len(p2) != len(p3):
        raise PramlocError(f"estimate_pose: {len(p2)} 2D points but {len(p3)} 3D points")
    need = max(MIN_POINTS, min_inliers)
    if len(p2) < need:
        return None, f"{len(p2)} matches < " + (f"{threshold} {min_inliers}" if min_inliers >= MIN_POINTS
                                                 else f"the {MIN_POINTS} of PnP")
    if not (np.all(np.isfinite(p2)) and np.all(np.isfinite(p3))):
        raise PramlocError("estimate_pose: correspondences contain NaN or infinite values")
    options = pycolmap.AbsolutePoseEstimationOptions()
    options.ransac.max_error = float(max_error_px)
    if seed is not None:
        options.ransac.random_seed = int(seed)
    cam = camera.to_pycolmap()  # refined in place
    if refine_focal:
        refinement = pycolmap.AbsolutePoseRefinementOptions()
        refinement.refine_focal_length = True
        ret = pycolmap.estimate_and_refine_absolute_pose(p2 + 0.5, p3, cam, options, refinement)
    else:
        ret = pycolmap.estimate_absolute_pose(p2 + 0.5, p3, cam, options)
    if ret is None:
        return None, f"RANSAC found no pose from {len(p2)} matches (max error {max_error_px:.3g} px)"
    num_inliers = int(ret["num_inliers"])
    if num_inliers < need:
        return None, f"{num_inliers} inliers < {threshold} {min_inliers} ({len(p2)} matches)"
    mask = np.asarray(ret["inlier_mask"], dtype=bool).reshape(-1)
    pose = Pose.from_pycolmap(ret["cam_from_world"])
    if refine and not refine_focal:
        pose = refine_pose(pose, p2[mask], p3[mask], camera)
    return PoseEstimate(pose, num_inliers, mask, camera=Camera.from_pycolmap(cam)), ""


def refine_pose(pose: Pose, points2D: np.ndarray, points3D: np.ndarray, camera: Camera) -> Pose:
    """Non-linear refinement of the world-to-camera ``pose`` on inlier correspondences
    points2D (N, 2) (keypoint convention) and points3D (N, 3): reprojection errors under a
    Cauchy loss of scale 1 px, as pycolmap's ``refine_absolute_pose``, by PoseLib. On the
    7-Scenes refinements both give the same camera centre within 0.03 mm (median; 0.9 mm at
    most) and PoseLib takes 2 ms where pycolmap's Ceres takes 6-7 (about 500 inliers)."""
    import poselib

    start = poselib.CameraPose()
    start.q, start.t = pose.qvec, pose.tvec  # PoseLib: world-to-camera too, q as (w, x, y, z)
    cam = {"model": camera.model, "width": camera.width, "height": camera.height, "params": camera.params.tolist()}
    refined, _ = poselib.refine_absolute_pose(points2D + 0.5, points3D, start, cam,
                                              {"loss_type": "CAUCHY", "loss_scale": 1.0})
    return Pose(refined.q, refined.t)


def estimate_pose(points2D: np.ndarray, points3D: np.ndarray, camera: Camera, max_error_px: float,
                  min_inliers: int, seed: int | None = 0, refine_focal: bool = False) -> PoseEstimate | None:
    """:func:`solve_pose` without the reason: the estimate, or None."""
    return solve_pose(points2D, points3D, camera, max_error_px, min_inliers, seed, refine_focal)[0]


def _as_numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _pair_distances(desc_a: np.ndarray, desc_b: np.ndarray, ia: np.ndarray, ib: np.ndarray,
                    chunk: int = 4096) -> np.ndarray:
    """Euclidean distances between desc_a[ia] and desc_b[ib], in cache-sized chunks."""
    out = np.empty(len(ia), np.float32)
    for s in range(0, len(ia), chunk):
        diff = desc_a[ia[s:s + chunk]]
        diff -= desc_b[ib[s:s + chunk]]
        out[s:s + chunk] = np.einsum("ij,ij->i", diff, diff)
    return np.sqrt(out)


def _nearest_per_group(group: np.ndarray, value: np.ndarray, num_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """Pairs grouped by ``group`` (K,) ints in [0, num_groups), ``value`` (K,) float32:
    per group present, in group order, the index of its pair of smallest value (the first
    in input order on ties) and the group's second-smallest value (inf for a lone pair).
    One stable sort by group (a radix sort on uint16 keys when the groups fit), then
    reductions over the groups' runs."""
    if len(group) == 0:
        return np.zeros(0, np.int64), np.zeros(0, value.dtype)
    order = np.argsort(group.astype(np.uint16) if num_groups <= 1 << 16 else group, kind="stable")
    g, v = group[order], value[order]
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
    smallest = np.minimum.reduceat(v, starts)
    hits = np.flatnonzero(v == np.repeat(smallest, np.diff(np.r_[starts, len(v)])))
    first = hits[np.searchsorted(hits, starts)]  # every run holds its minimum
    v[first] = np.inf
    return order[first], np.minimum.reduceat(v, starts)


def match_by_projection(pose: Pose, camera: Camera, query_kps: np.ndarray, query_desc: np.ndarray,
                        map_xyz: np.ndarray, map_desc: np.ndarray, radius_px: float,
                        ratio: float | None = 0.9) -> tuple[np.ndarray, np.ndarray]:
    """Match query keypoints to the map points that ``pose`` projects within ``radius_px``.

    query_kps (N, 2) pixels, query_desc (N, D); map_xyz (P, 3), map_desc (P, D).
    Only points in front of the camera and inside the image are candidates. Each query
    keypoint takes its nearest candidate by descriptor distance if it passes the ratio
    test against the second nearest candidate (a lone candidate passes); each map point
    keeps its best query keypoint. Returns matches (K, 2) int64 rows (query index, map
    index) and their descriptor distances (K,).
    """
    kps = np.asarray(query_kps, dtype=np.float64).reshape(-1, 2)
    # Read only (no copy when already float32: the map's descriptors are dequantized per query).
    qd = _as_numpy(query_desc).astype(np.float32, copy=False)
    md = _as_numpy(map_desc).astype(np.float32, copy=False)
    xyz = np.asarray(map_xyz, dtype=np.float64).reshape(-1, 3)
    if len(kps) != len(qd) or len(xyz) != len(md):
        raise PramlocError(f"match_by_projection: {len(kps)} keypoints / {len(qd)} descriptors, "
                           f"{len(xyz)} points / {len(md)} descriptors")
    if len(qd) and len(md) and qd.shape[1] != md.shape[1]:
        raise PramlocError(f"match_by_projection: descriptor dimensions differ ({qd.shape[1]} vs {md.shape[1]})")
    empty = np.zeros((0, 2), np.int64), np.zeros((0,), np.float32)
    if len(kps) == 0 or len(xyz) == 0:
        return empty
    uv, depth = project(camera, pose, xyz)
    visible = ((depth > 1e-6) & (uv[:, 0] >= -0.5) & (uv[:, 1] >= -0.5)
               & (uv[:, 0] < camera.width - 0.5) & (uv[:, 1] < camera.height - 0.5))
    vis_idx = np.flatnonzero(visible)
    if len(vis_idx) == 0:
        return empty
    # All (keypoint, visible point) pairs closer than radius_px in the image.
    pairs = cKDTree(kps).sparse_distance_matrix(cKDTree(uv[vis_idx]), float(radius_px), output_type="ndarray")
    if len(pairs) == 0:
        return empty
    qi, pj = pairs["i"].astype(np.int64), vis_idx[pairs["j"]].astype(np.int64)
    dist = _pair_distances(qd, md, qi, pj)
    # Per keypoint: its nearest candidate by descriptor distance, if it passes the ratio test
    # against the second nearest; then one keypoint per map point, the closest.
    best, second = _nearest_per_group(qi, dist, len(kps))
    if ratio is not None:
        best = best[dist[best] <= ratio * second]
    best = best[_nearest_per_group(pj[best], dist[best], len(xyz))[0]]
    best = best[np.argsort(qi[best], kind="stable")]
    return np.stack([qi[best], pj[best]], 1), dist[best]


def refine_by_projection(pose: Pose | PoseEstimate, camera: Camera, query_kps: np.ndarray,
                         query_desc: np.ndarray, map_xyz: np.ndarray, map_desc: np.ndarray,
                         radius_px: float, ratio: float | None, max_error_px: float, min_inliers: int,
                         seed: int | None = 0, refine_focal: bool = False) -> PoseEstimate | None:
    """Second pass: match by projection with a first pose (:func:`match_by_projection`),
    then re-estimate the pose from these matches (:func:`estimate_pose`).

    With a first :class:`PoseEstimate`, returns whichever of the two has more inliers;
    with a bare :class:`Pose`, returns the refined estimate or None. The refined
    estimate carries its ``matches`` (query index, map index). A first estimate's
    ``camera`` (e.g. its refined focal length) replaces ``camera``; ``refine_focal``
    refines the focal length again with the new matches.
    """
    first = pose if isinstance(pose, PoseEstimate) else None
    start = first.pose if first is not None else pose
    if first is not None and first.camera is not None:
        camera = first.camera
    matches, _ = match_by_projection(start, camera, query_kps, query_desc, map_xyz, map_desc, radius_px, ratio)
    refined = None
    if len(matches):
        refined = estimate_pose(np.asarray(query_kps)[matches[:, 0]], np.asarray(map_xyz)[matches[:, 1]],
                                camera, max_error_px, min_inliers, seed, refine_focal)
        if refined is not None:
            refined.matches = matches
    if first is not None and (refined is None or first.num_inliers > refined.num_inliers):
        return first
    return refined
