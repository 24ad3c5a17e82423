"""``pramloc localize``: per-query pipeline and its modes.

    features -> recognition (keypoint labels and votes, landmarks ranked by predicted visibility)
             -> hypotheses: groups of landmarks, each matched as one region (the strongest
                keypoints against all of its points)
             -> PnP + RANSAC -> refinement by projection, next hypothesis until a
                confident pose                                           [recognition]
    features -> VLAD retrieval of map images -> matching against their points
             -> PnP + RANSAC -> refinement by projection                 [retrieval]
    auto = recognition, falling back to retrieval when recognition is unsure, registration
    fails, or the pose has fewer than ``confident_inliers`` inliers (then the pose with
    more inliers wins).

Poses are world-to-camera. Keypoints are in pixels of the original query image.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import logger
from .config import LocalizationConfig, RetrievalConfig
from .errors import PramlocError
from .features import extract_image, extract_path
from .geometry import Camera, Pose
from .mapio import LandmarkMap, load_map, retrieval_index
from .matching import match
from .registration import PoseEstimate, estimate_pose, refine_by_projection
from .timing import timed as _Timer

MODES = ("recognition", "retrieval", "auto")

@dataclass
class QueryResult:
    """Outcome of one query. ``path``: recognition, retrieval or failed."""

    name: str
    pose: Pose | None = None
    path: str = "failed"
    landmarks: list[int] = field(default_factory=list)
    votes: list[float] = field(default_factory=list)
    visibility: list[float] = field(default_factory=list)
    retrieved: list[str] = field(default_factory=list)
    num_keypoints: int = 0
    num_matches: int = 0
    num_inliers: int = 0
    times: dict[str, float] = field(default_factory=dict)
    reason: str = ""

    def log_record(self) -> dict:
        d = asdict(self)
        d["pose"] = None if self.pose is None else {"qvec": self.pose.qvec.tolist(), "tvec": self.pose.tvec.tolist()}
        d["times"] = {k: round(v * 1000, 2) for k, v in self.times.items()}  # ms
        d["time_total_ms"] = round(sum(self.times.values()) * 1000, 2)
        return d


class Localizer:
    """Loads a map once and localizes query images against it.

    >>> loc = Localizer("maps/kitchen")
    >>> result = loc.localize("query.jpg", Camera.from_string("PINHOLE 640 480 525 525 320 240"))
    """

    def __init__(self, map_path: Path | LandmarkMap, mode: str = "auto", conf: LocalizationConfig | dict | None = None,
                 device: str | None = None):
        if mode not in MODES:
            raise PramlocError(f"unknown mode {mode!r} (choose from {', '.join(MODES)})")
        self.map = map_path if isinstance(map_path, LandmarkMap) else load_map(map_path)
        mconf = self.map.manifest.get("config", {})
        self.conf = LocalizationConfig.of(conf, "localization").to_dict()
        self.feature_conf = self.map.manifest["feature"]
        self.top_k = RetrievalConfig.of(mconf.get("retrieval"), "retrieval").top_k
        self.mode = mode
        self.device = torch.device(device or "cpu")
        self.recognizer = None
        if mode != "retrieval":
            if self.map.recognizer_path is None:
                if mode == "recognition":
                    raise PramlocError(f"{self.map.path}: map has no recognizer (rebuild without --no-train, "
                                       "or use --mode retrieval)")
                logger.warning("%s: map has no recognizer; every query takes the retrieval path.", self.map.path)
            else:
                from .recognition import Recognizer

                from .mapio import RECOGNIZER, read_part

                # Read through the manifest the map was loaded with: never a newer map's model.
                self.recognizer = Recognizer.load(self.map.recognizer_path, device=str(self.device),
                                                  data=read_part(self.map, RECOGNIZER))
        self.index = retrieval_index(self.map) if mode != "recognition" else None
        self.descriptors = torch.from_numpy(self.map.descriptors).to(self.device)
        self._xyz = self.map.xyz.astype(np.float64)
        self._offsets = self.map.landmark_offsets
        # Map image of each stored observation (for the co-visible images of a pose).
        self._obs_image = np.repeat(np.arange(len(self.map.image_names)), np.diff(self.map.image_offsets))

    # ------------------------------------------------------------------ stages

    def _match(self, q_idx: np.ndarray, desc: torch.Tensor, pts: np.ndarray) -> np.ndarray:
        """Match query keypoints ``q_idx`` to map points ``pts`` (mutual nearest neighbours
        with a ratio test): (K, 2) rows of (keypoint index, point index)."""
        if len(q_idx) == 0 or len(pts) == 0:
            return np.zeros((0, 2), np.int64)
        m, _ = match(desc[torch.from_numpy(q_idx)], self.descriptors[torch.from_numpy(pts)],
                     ratio=self.conf["ratio"], mutual=True)
        m = m.cpu().numpy()
        return np.stack([q_idx[m[:, 0]], pts[m[:, 1]]], 1) if len(m) else np.zeros((0, 2), np.int64)

    def _register_and_refine(self, matches, pts, kps, desc_np, camera, res: QueryResult, px: float):
        """PnP + RANSAC on ``matches``, then refinement against ``pts`` and co-visible points.
        Returns (estimate or None, failure reason)."""
        res.num_matches = len(matches)
        with _Timer(res.times, "pnp"):
            est = self._register(matches, kps, camera, px)
        if est is None:
            return None, f"registration failed ({len(matches)} matches)"
        return self._refine(est, matches, kps, desc_np, camera, pts, res.times, px), ""

    def _register(self, matches: np.ndarray, kps: np.ndarray, camera: Camera, px: float) -> PoseEstimate | None:
        c = self.conf
        if len(matches) < 4:
            return None
        return estimate_pose(kps[matches[:, 0]], self._xyz[matches[:, 1]], camera,
                             c["ransac_max_error"] * px, c["min_inliers"], seed=c["seed"])

    def _refine(self, est: PoseEstimate, matches: np.ndarray, kps, desc_np, camera, seed_points: np.ndarray,
                times: dict, px: float) -> PoseEstimate:
        """Re-match by projection against ``seed_points`` and the points of the map images
        co-visible with the inliers, then re-estimate (:func:`refine_by_projection`)."""
        c = self.conf
        with _Timer(times, "refinement"):
            seen = np.isin(self.map.image_points, matches[est.inlier_mask, 1])
            counts = np.bincount(self._obs_image[seen], minlength=len(self.map.image_names))
            covis = np.argsort(-counts, kind="stable")[: c["covisible_images"]]
            covis = covis[counts[covis] > 0]
            pts = np.unique(np.concatenate([seed_points] + [self.map.image_point_ids(i) for i in covis]))
            # The refined estimate, unless it has fewer inliers than the first.
            return refine_by_projection(est, camera, kps, desc_np, self._xyz[pts], self.map.descriptors[pts],
                                        c["refine_radius"] * px, c["ratio"], c["refine_max_error"] * px,
                                        c["min_inliers"], seed=c["seed"])

    def _recognition_path(self, kps, desc, desc_np, size, camera, res: QueryResult, px: float):
        c, times = self.conf, res.times
        with _Timer(times, "recognition"):
            # The strongest keypoints only (features are sorted by score): attention cost
            # grows with the square of their number.
            n = min(len(kps), c["recognition_keypoints"])
            rec = self.recognizer.recognize(kps[:n], desc_np[:n], size)
            ranked = rec.ranked()
        res.landmarks = ranked[: c["max_landmarks"]].tolist()
        if rec.votes[ranked[: self._group_size(rec, ranked)]].sum() < c["min_votes"]:
            res.votes = [round(float(rec.votes[l]), 2) for l in res.landmarks]
            res.visibility = [round(float(rec.visibility[l]), 4) for l in res.landmarks]
            return None, "recognition unsure"
        # Hypotheses: groups of landmarks, each matched as one region (every keypoint against
        # all of their points: a keypoint's own label is wrong too often to restrict its
        # candidates), in turn until a confident pose: the top landmarks by predicted
        # visibility, then by keypoint votes (the recognizer's two heads disagree on some
        # views), then the next ones.
        best, reason, tried = None, "", []
        for group in self._hypotheses(rec, ranked):
            with _Timer(times, "matching"):
                pts = self._landmark_points(group)
                matches = self._match(np.arange(min(len(kps), c["match_keypoints"])), desc, pts)
            est, why = self._register_and_refine(matches, pts, kps, desc_np, camera, res, px)
            tried += [l for l in group.tolist() if l not in tried]
            if est is not None and (best is None or est.num_inliers > best.num_inliers):
                best = est
            reason = reason or why
            if best is not None and best.num_inliers >= c["confident_inliers"]:
                break
        res.landmarks = tried  # every landmark matched, in order
        res.votes = [round(float(rec.votes[l]), 2) for l in res.landmarks]
        res.visibility = [round(float(rec.visibility[l]), 4) for l in res.landmarks]
        return best, "" if best is not None else reason

    def _group_size(self, rec, ranked: np.ndarray) -> int:
        """Landmarks per hypothesis: as many as hold ``landmark_visibility`` of the predicted
        visibility (few when the view is dominated by some landmarks, more when it spreads
        over many, as on a facade), at most ``max_landmarks``."""
        share = np.cumsum(rec.visibility[ranked]) / max(float(rec.visibility.sum()), 1e-9)
        return int(min(np.searchsorted(share, self.conf["landmark_visibility"]) + 1, self.conf["max_landmarks"]))

    def _hypotheses(self, rec, ranked: np.ndarray):
        """Up to ``hypotheses`` groups of :meth:`_group_size` landmarks, each bringing new
        ones: by visibility (``ranked``) and by votes in turn."""
        k, seen, n = self._group_size(rec, ranked), set(), 0
        by_votes = np.argsort(-rec.votes, kind="stable")
        by_votes = by_votes[rec.votes[by_votes] > 0]
        for start in range(0, len(ranked), k):
            for order in (ranked, by_votes):
                group = order[start:start + k]
                if n == self.conf["hypotheses"] or not len(group):
                    return
                if not set(group.tolist()) <= seen:
                    seen.update(group.tolist())
                    n += 1
                    yield group

    def _landmark_points(self, landmarks: np.ndarray) -> np.ndarray:
        o = self._offsets
        return np.concatenate([np.arange(o[l], o[l + 1]) for l in landmarks])

    def _retrieval_path(self, kps, desc, desc_np, camera, res: QueryResult, px: float):
        times = res.times
        with _Timer(times, "retrieval"):
            idx, _ = self.index.search(self.index.describe(desc_np), self.top_k)
            res.retrieved = [self.map.image_names[i] for i in idx]
            pts = np.unique(np.concatenate([self.map.image_point_ids(i) for i in idx]))
        with _Timer(times, "matching"):
            matches = self._match(np.arange(len(kps)), desc, pts)
        return self._register_and_refine(matches, pts, kps, desc_np, camera, res, px)

    # ------------------------------------------------------------------ public

    def localize(self, image: Path | np.ndarray, camera: Camera, name: str | None = None) -> QueryResult:
        """Localize one image (a path, or a grayscale (H, W) uint8 array) taken with
        ``camera`` (intrinsics at the image's own resolution). Never raises for a bad
        query: a failure is returned with its reason."""
        name = name or (str(image) if not isinstance(image, np.ndarray) else "image")
        res = QueryResult(name)
        try:
            with _Timer(res.times, "features"):
                f = (extract_image(image, self.feature_conf) if isinstance(image, np.ndarray)
                     else extract_path(image, self.feature_conf))
            size = w, h = tuple(int(v) for v in f["image_size"])
            if (w, h) != (camera.width, camera.height):
                if abs(w / h - camera.width / camera.height) > 0.01:
                    res.reason = f"image {w}x{h} does not match camera {camera.width}x{camera.height}"
                    return res
                camera = camera.scaled(w / camera.width, h / camera.height)
            kps, desc_np = f["keypoints"].astype(np.float64), f["descriptors"]
            res.num_keypoints = len(kps)
            if len(kps) < 4:
                res.reason = f"too few keypoints ({len(kps)})"
                return res
            desc = torch.from_numpy(desc_np).to(self.device)
            # Pixel thresholds are set at the extraction resolution: scale them up for images
            # that were downscaled for extraction (e.g. 3072 px photos at max_side 1024).
            px = max(1.0, max(size) / (self.feature_conf.get("max_side") or max(size)))
            est, reason = None, ""
            if self.recognizer is not None and self.mode != "retrieval":
                est, reason = self._recognition_path(kps, desc, desc_np, size, camera, res, px)
                if est is not None:
                    res.path = "recognition"
            unsure = est is None or est.num_inliers < self.conf["confident_inliers"]
            if unsure and self.mode != "recognition":
                if est is not None:
                    reason = f"recognition pose has only {est.num_inliers} inliers"
                fallback, reason2 = self._retrieval_path(kps, desc, desc_np, camera, res, px)
                reason = "; ".join(r for r in (reason, reason2) if r)
                if fallback is not None and (est is None or fallback.num_inliers > est.num_inliers):
                    est, res.path = fallback, "retrieval"
            if est is None:
                res.reason = reason
                return res
            res.pose, res.num_inliers, res.reason = est.pose, int(est.num_inliers), reason
        except PramlocError as err:
            res.reason = str(err)
        return res


def query_list(dataset: str | None = None, root: Path | None = None, images: Path | None = None,
               queries: Path | None = None, camera: Camera | None = None) -> list[tuple[str, Path, Camera]]:
    """(name, path, camera) of the queries: a dataset split (``dataset``, ``root``,
    ``queries``) or an hloc query list (``images``, ``queries``: ``name MODEL W H params``,
    ``camera`` for lines without intrinsics)."""
    from .datasets import load_dataset
    from .io import read_query_list

    if dataset:
        scene = load_dataset(dataset, root, queries)
        return [(im.name, scene.path(im.name), im.camera or camera) for im in scene.images]
    if images is None or queries is None:
        raise PramlocError("give an image, --dataset/--root/--queries, or --images with --queries")
    out = []
    for name, cam in read_query_list(queries).items():
        cam = cam or camera
        if cam is None:
            raise PramlocError(f"{queries}: query {name!r} has no intrinsics (give them in the list or with --camera)")
        out.append((name, Path(images) / name, cam))
    return out


def main(map_path: Path, queries: list[tuple[str, Path, Camera]], out: Path, mode: str = "auto",
         conf: LocalizationConfig | dict | None = None, device: str | None = None, log_path: Path | None = None) -> dict:
    """Localize ``queries`` ((name, image path, camera) triples) and stream the results:
    ``out`` gets ``name qw qx qy qz tx ty tz`` per localized query (hloc format) and
    ``log_path`` (default ``out`` + ``_log.jsonl``) one JSON record per query, failed
    ones included. Returns a summary."""
    from .io import log_path as default_log_path, pose_line
    from .progress import track

    loc = Localizer(map_path, mode, conf, device)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    log_path = Path(log_path) if log_path else default_log_path(out)
    counts = {"recognition": 0, "retrieval": 0, "failed": 0}
    totals = []
    with open(out, "w") as fo, open(log_path, "w") as fl:
        for name, path, camera in track(queries, desc=f"localize ({mode})"):
            r = loc.localize(path, camera, name)
            counts[r.path] += 1
            totals.append(sum(r.times.values()))
            if r.pose is not None:
                fo.write(pose_line(name, r.pose))
            else:
                logger.debug("%s: failed: %s", name, r.reason)
            fl.write(json.dumps(r.log_record()) + "\n")
            fo.flush()
            fl.flush()
    summary = {"queries": len(queries), **counts, "results": str(out), "log": str(log_path),
               "median_time_s": float(np.median(totals)) if totals else 0.0}
    logger.info("Localized %d/%d queries (recognition %d, retrieval %d, failed %d); results in %s",
                len(queries) - counts["failed"], len(queries), counts["recognition"], counts["retrieval"],
                counts["failed"], out)
    return summary
