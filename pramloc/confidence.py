"""A calibrated confidence for a localized pose: P(the pose is right), and a ``confident`` flag.

A user localizing their own photos has no ground truth: this module turns what the
localizer knows about a pose (:class:`Evidence`) into dimension-free features
(:func:`features`) and those into a probability with a small logistic model fitted once,
not per map (``confidence_model.json`` beside this file, written by
``bench/fit_confidence.py``; see docs/CONFIDENCE.md for what it was fitted on and how it
was validated).

"Right" (the model's target) is within 50 cm and 5 degrees of the true pose on the
training scenes (7-Scenes and Strecha, metres). ``confident`` is ``confidence >=`` the
shipped threshold, chosen on the training data for a precision of at least 99.5%.

Every feature is free of the map's units (a map may be in metres, or in the arbitrary
units of structure-from-motion): counts, ratios, pixels scaled like the localizer's own
thresholds, angles, and camera shifts relative to the median depth of the inliers.
Poses are world-to-camera (COLMAP's ``cam_from_world``); keypoints are pixels of the
query image, in the keypoint convention (centre of the top-left pixel at (0, 0)).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from .evaluate import pose_errors
from .geometry import Camera, Pose, project

MODEL_PATH = Path(__file__).with_name("confidence_model.json")
GRID = 8  # cells per image side for the inliers' coverage
SAMPLE = 256  # inliers (evenly strided) that the reprojection error and the hull are measured on

# The features, in the model's order (see :func:`features`).
FEATURES = ("log_inliers", "inlier_ratio", "coverage", "hull", "reprojection_px", "refine_rotation",
            "refine_shift", "paths_compared", "paths_disagree", "retrieval", "log_votes", "focal_change",
            "first_inlier_ratio", "refine_gain", "visible_matched")
CANDIDATES = 4096  # map points (evenly strided) projected to estimate how many the pose sees


@dataclass
class Evidence:
    """What the localizer knows about the pose it returns.

    ``inlier_kps`` (N, 2) query pixels and ``inlier_xyz`` (N, 3) world points of the pose's
    inliers, among ``num_matches`` matches; ``camera`` the pose's camera (focal length
    refined when it was estimated), ``image_size`` (width, height) in pixels, ``px`` the
    scale of the localizer's pixel thresholds (1 at the extraction resolution);
    ``first_pose`` the pose before the refinement by projection (None: the refinement
    found no better pose); ``other_pose`` the pose of the other path when both gave one
    (auto mode), else None; ``path`` recognition or retrieval; ``votes`` the recognizer's
    votes of the landmarks matched (empty on the retrieval path alone); ``focal_initial``
    the estimated focal length before refinement (None: the camera was given or known);
    ``first_inliers`` of the first pose among the ``first_matches`` of the first matching
    (descriptors); ``candidates_xyz`` (P, 3) the map points near the pose (those the
    refinement matched by projection against), None if unknown.
    """

    pose: Pose
    camera: Camera
    image_size: tuple[int, int]
    px: float
    inlier_kps: np.ndarray
    inlier_xyz: np.ndarray
    num_matches: int
    path: str
    first_pose: Pose | None = None
    other_pose: Pose | None = None
    votes: tuple[float, ...] = ()
    focal_initial: float | None = None
    first_inliers: int = 0
    first_matches: int = 0
    candidates_xyz: np.ndarray | None = None


def _moved(a: Pose, b: Pose, depth: float) -> tuple[float, float]:
    """(degrees, centre distance / ``depth``) between poses ``a`` and ``b``: free of the map's
    units (``depth``: the scene's distance from the camera, same units)."""
    shift, deg = pose_errors(a, b)
    return deg, shift / max(depth, 1e-12)


def reprojection_px(camera: Camera, cam_xyz: np.ndarray, kps: np.ndarray) -> float:
    """Median distance in pixels between ``kps`` (N, 2) and the points ``cam_xyz`` (N, 3), in
    camera coordinates in front of it, projected with ``camera`` (its distortion included)."""
    uv = np.asarray(camera.to_pycolmap().img_from_cam(cam_xyz)) - 0.5  # COLMAP pixel centres -> keypoints
    return float(np.median(np.linalg.norm(uv - kps, axis=1)))


def visible_share(camera: Camera, pose: Pose, xyz: np.ndarray) -> float:
    """Share of the points ``xyz`` (P, 3) in front of the camera and inside its image
    (:func:`~pramloc.geometry.project`: pinhole, distortion ignored)."""
    uv, z = project(camera, pose, xyz)
    inside = (z > 1e-9) & (uv[:, 0] >= -0.5) & (uv[:, 1] >= -0.5) & (uv[:, 0] < camera.width - 0.5) \
        & (uv[:, 1] < camera.height - 0.5)
    return float(inside.sum()) / max(len(xyz), 1)


def coverage(kps: np.ndarray, size: tuple[int, int], grid: int = GRID) -> float:
    """Share of the ``grid`` x ``grid`` cells of the image that hold a keypoint of ``kps`` (N, 2)."""
    if len(kps) == 0:
        return 0.0
    w, h = size
    cx = np.clip((kps[:, 0] + 0.5) * grid // w, 0, grid - 1).astype(np.int64)
    cy = np.clip((kps[:, 1] + 0.5) * grid // h, 0, grid - 1).astype(np.int64)
    return len(np.unique(cy * grid + cx)) / grid ** 2


def hull_share(kps: np.ndarray, size: tuple[int, int]) -> float:
    """Area of the convex hull of ``kps`` (N, 2) over the image's area."""
    if len(kps) < 3:
        return 0.0
    import cv2

    hull = cv2.convexHull(np.asarray(kps, np.float32))
    return float(min(cv2.contourArea(hull) / (size[0] * size[1]), 1.0))


def features(ev: Evidence) -> np.ndarray:
    """The model's features (len(FEATURES),) float64 of one pose, all dimension-free:

    - ``log_inliers``: log of the number of inliers; ``inlier_ratio``: inliers / matches;
    - ``coverage``: share of 8x8 image cells with an inlier (:func:`coverage`); ``hull``:
      their convex hull's share of the image;
    - ``reprojection_px``: median reprojection error of the inliers, in pixels / ``px``;
    - ``refine_rotation``, ``refine_shift``: how far the refinement moved the first pose:
      log(1 + degrees) and log(1 + 100 x centre shift / median inlier depth);
    - ``paths_compared``: 1 when both paths gave a pose; ``paths_disagree``: then the
      log(1 + degrees + 100 x relative shift) between them, else 0;
    - ``retrieval``: 1 for a pose of the retrieval path; ``log_votes``: log(1 + the
      recognizer's votes of the landmarks matched);
    - ``focal_change``: |log(refined / estimated focal length)| (0 for a given camera);
    - ``first_inlier_ratio``: the first pose's inliers / the matches of the first matching;
      ``refine_gain``: log(inliers / the first pose's inliers);
    - ``visible_matched``: inliers / the map points near the pose that it projects into the
      image (of ``candidates_xyz``, estimated on an even sample), at most 1.
    """
    n = len(ev.inlier_kps)
    R = ev.pose.R
    step = -(-n // SAMPLE) if n else 1  # an even sample of the inliers (all up to SAMPLE)
    kps = np.asarray(ev.inlier_kps, np.float64).reshape(-1, 2)[::step]
    cam_xyz = np.asarray(ev.inlier_xyz, np.float64).reshape(-1, 3)[::step] @ R.T + ev.pose.tvec
    front = cam_xyz[:, 2] > 0
    scene_depth = float(np.median(cam_xyz[front, 2])) if front.any() else 1.0
    reproj = reprojection_px(ev.camera, cam_xyz[front], kps[front]) / ev.px if front.any() else 10.0
    f = {
        "log_inliers": math.log(max(n, 1)),
        "inlier_ratio": n / max(ev.num_matches, n, 1),
        "coverage": coverage(ev.inlier_kps, ev.image_size),
        "hull": hull_share(ev.inlier_kps, ev.image_size),
        "reprojection_px": min(reproj, 10.0),
        "refine_rotation": 0.0, "refine_shift": 0.0,
        "paths_compared": 0.0, "paths_disagree": 0.0,
        "retrieval": float(ev.path == "retrieval"),
        "log_votes": math.log1p(max(sum(ev.votes), 0.0)),
        "focal_change": 0.0,
    }
    if ev.first_pose is not None:
        deg, shift = _moved(ev.first_pose, ev.pose, scene_depth)
        f["refine_rotation"], f["refine_shift"] = math.log1p(deg), math.log1p(100 * shift)
    if ev.other_pose is not None:
        deg, shift = _moved(ev.other_pose, ev.pose, scene_depth)
        f["paths_compared"], f["paths_disagree"] = 1.0, math.log1p(deg + 100 * shift)
    if ev.focal_initial:
        f["focal_change"] = abs(math.log(ev.camera.K()[0, 0] / ev.focal_initial))
    f["first_inlier_ratio"] = ev.first_inliers / max(ev.first_matches, ev.first_inliers, 1)
    f["refine_gain"] = math.log(max(n, 1) / max(ev.first_inliers, 1)) if ev.first_inliers else 0.0
    f["visible_matched"] = 0.0
    if ev.candidates_xyz is not None and len(ev.candidates_xyz):
        cand = np.asarray(ev.candidates_xyz, np.float64).reshape(-1, 3)
        seen = visible_share(ev.camera, ev.pose, cand[::-(-len(cand) // CANDIDATES)]) * len(cand)
        f["visible_matched"] = min(n / seen, 1.0) if seen > 0 else 0.0
    return np.array([f[k] for k in FEATURES], np.float64)


@dataclass
class ConfidenceModel:
    """Logistic model: ``sigmoid(bias + weights . (x - mean) / scale)`` on :data:`FEATURES`,
    ``confident`` at ``threshold``; ``meta``: what it was fitted on (see docs/CONFIDENCE.md)."""

    features: tuple[str, ...]
    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    bias: float
    threshold: float
    meta: dict

    def predict(self, x: np.ndarray) -> np.ndarray:
        """P(right) (M,) of feature rows ``x`` (M, len(features))."""
        z = self.bias + ((np.atleast_2d(x) - self.mean) / self.scale) @ self.weights
        return 1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))

    def to_dict(self) -> dict:
        return {"features": list(self.features), "mean": self.mean.tolist(), "scale": self.scale.tolist(),
                "weights": self.weights.tolist(), "bias": self.bias, "threshold": self.threshold, "meta": self.meta}

    @classmethod
    def from_dict(cls, d: dict) -> "ConfidenceModel":
        if tuple(d["features"]) != FEATURES:
            raise ValueError(f"confidence model features {d['features']} are not this version's {list(FEATURES)}")
        return cls(tuple(d["features"]), np.asarray(d["mean"], np.float64), np.asarray(d["scale"], np.float64),
                   np.asarray(d["weights"], np.float64), float(d["bias"]), float(d["threshold"]), d.get("meta", {}))

    def save(self, path: Path = MODEL_PATH) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1) + "\n")


@lru_cache(maxsize=1)
def shipped_model() -> ConfidenceModel | None:
    """The model shipped with the package (None before bench/fit_confidence.py wrote it, or
    when it was fitted on other features)."""
    if not MODEL_PATH.exists():
        return None
    try:
        return ConfidenceModel.from_dict(json.loads(MODEL_PATH.read_text()))
    except (ValueError, KeyError) as err:  # a model of other features: no confidence, said once
        from . import logger

        logger.warning("%s: %s; poses get no confidence (refit with bench/fit_confidence.py)", MODEL_PATH, err)
        return None


def score(x: np.ndarray, model: ConfidenceModel | None = None) -> tuple[float | None, bool]:
    """(confidence in [0, 1], confident) of one pose's features ``x`` (:func:`features`);
    (None, False) without a model."""
    model = model or shipped_model()
    if model is None:
        return None, False
    p = float(model.predict(x)[0])
    return p, p >= model.threshold


def assess(ev: Evidence, model: ConfidenceModel | None = None) -> tuple[float | None, bool]:
    """(confidence in [0, 1], confident) of one pose (:func:`features`, :func:`score`)."""
    return score(features(ev), model)
