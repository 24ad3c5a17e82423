"""``pramloc localize``: per-query pipeline and its modes.

    features -> recognition (keypoint labels and votes, landmarks ranked by predicted visibility)
             -> hypotheses: groups of landmarks, each matched as one region (the strongest
                keypoints against the most observed points of each landmark)
             -> PnP + LO-RANSAC -> refinement by projection, next hypothesis until a
                confident pose (none gave a pose: the first group once more, with every
                point of its landmarks)                                  [recognition]
    features -> retrieval of map images (the map's method) -> matching against their points
             -> PnP + LO-RANSAC -> refinement by projection              [retrieval]
    auto = recognition, falling back to retrieval when recognition is unsure, registration
    fails, or the pose has fewer than ``confident_inliers`` inliers (then the pose with
    more inliers wins).

A first pose needs ``min_first_inliers``, the refined pose kept ``min_inliers``. A query
without intrinsics gets estimated ones (EXIF or a guess, :mod:`pramloc.intrinsics`), and
its focal length is refined in PnP. Poses are world-to-camera. Keypoints are in pixels of
the original query image.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from itertools import chain
from pathlib import Path

import numpy as np
import torch

from . import logger
from .config import LocalizationConfig, RetrievalConfig, deep_merge
from .errors import PramlocError
from .features import extract_image, extract_path
from .geometry import Camera, Pose
from .intrinsics import SOURCE_GUESS, guess_camera, photo_camera, size_mismatch
from .mapio import POINTS_ORDER, LandmarkMap, load_map, retrieval_index
from .matching import match
from .registration import PoseEstimate, refine_by_projection, solve_pose
from .retrieval import RetrievalInput
from .timing import timed_ms as _Timer

MODES = ("recognition", "retrieval", "auto")
SOURCE_MAP = "from the map's camera"  # a query of a camera the map knows (same EXIF make, model, size and focal)

@dataclass
class QueryResult:
    """Outcome of one query. ``path``: recognition, retrieval or failed; ``map``: the map's folder.

    ``num_matches``: 2D-3D matches of the first matching (landmark points or retrieved
    images) of the path that gave the pose (on failure: the most of any attempt);
    ``num_refined_matches``: the matches by projection of the refinement (0 when it did not
    run); ``num_inliers`` of the pose, counted among the matches of ``pose_from`` ("first
    matching" or "refinement", whichever pose had more inliers). ``intrinsics``: where the
    camera came from ("given", the map's camera, or how it was estimated, see
    :mod:`pramloc.intrinsics`; empty when the query failed before);
    ``camera``: the pose's camera at the image's size (its focal length refined when
    estimated; in the log as ``MODEL W H params``), ``focal`` its focal length in pixels,
    ``focal_initial`` the estimated one before refinement. ``notes``: what happened on each path tried;
    ``reason``: why the query failed (empty on success). ``confidence``: the probability
    that the pose is right (:mod:`pramloc.confidence`; 0.0 on failure, None where no model
    is shipped), ``confident`` whether it reaches the model's threshold, and
    ``confidence_features`` what it was computed from.
    """

    name: str
    pose: Pose | None = None
    path: str = "failed"
    map: str = ""
    landmarks: list[int] = field(default_factory=list)
    votes: list[float] = field(default_factory=list)
    visibility: list[float] = field(default_factory=list)
    retrieved: list[str] = field(default_factory=list)
    num_keypoints: int = 0
    num_matches: int = 0
    num_refined_matches: int = 0
    num_inliers: int = 0
    pose_from: str = ""
    intrinsics: str = ""
    focal_initial: float | None = None
    camera: Camera | None = None
    focal: float | None = None
    times_ms: dict[str, float] = field(default_factory=dict)  # wall time per stage, ms
    notes: dict[str, str] = field(default_factory=dict)
    reason: str = ""
    confidence: float | None = 0.0
    confident: bool = False
    confidence_features: dict[str, float] = field(default_factory=dict)

    def log_record(self) -> dict:
        d = asdict(self)
        d["pose"] = None if self.pose is None else {"qvec": self.pose.qvec.tolist(), "tvec": self.pose.tvec.tolist()}
        d["camera"] = None if self.camera is None else self.camera.to_string()
        d["times"] = {k: round(v, 2) for k, v in d.pop("times_ms").items()}  # ms
        d["time_total_ms"] = round(sum(self.times_ms.values()), 2)
        return d

    def lines(self) -> tuple[str, str]:
        """Its line of a results file (``name qw qx qy qz tx ty tz``; "" when it failed) and
        of the JSON-lines log."""
        from .io import pose_line

        return (pose_line(self.name, self.pose) if self.pose is not None else "",
                json.dumps(self.log_record()) + "\n")

    def summary(self) -> str:
        """One line: path, confidence, inliers and the matches they are counted among, intrinsics, time."""
        if self.pose is None:
            return f"failed: {self.reason}"
        conf = ("" if self.confidence is None
                else f"confidence {self.confidence:.2f} ({'confident' if self.confident else 'not confident'}), ")
        if self.pose_from == "refinement":
            counts = (f"{self.num_inliers} inliers of {self.num_refined_matches} matches by projection "
                      f"(refinement; first matching {self.num_matches} matches)")
        else:
            counts = f"{self.num_inliers} inliers of {self.num_matches} matches (the refinement found no better pose)"
        if self.intrinsics == "given" or self.intrinsics.startswith(SOURCE_MAP):
            cam = f"intrinsics {self.intrinsics}" + (f" ({self.notes['camera']})" if "camera" in self.notes else "")
        else:
            cam = (f"intrinsics estimated from {self.intrinsics}: focal {self.focal_initial:.0f} px, refined to "
                   f"{self.focal:.0f} px")
        return (f"path {self.path}, {conf}{counts}, landmarks {self.landmarks}, {cam}, "
                f"{sum(self.times_ms.values()):.0f} ms")


@dataclass
class _Attempt:
    """One registration: the estimate (or None), the first matching's and the refinement's
    match counts, and what happened (a note naming any threshold missed). For the
    confidence: ``first_pose`` before the refinement (None when it found no better pose),
    the estimate's inliers ``inlier_kps`` (N, 2) pixels and ``inlier_xyz`` (N, 3) world
    points, among :attr:`counted_matches` matches; ``first_inliers`` of the first pose among the
    ``num_matches`` of the first matching; ``candidates_xyz`` (P, 3) the map points the
    refinement matched by projection against."""

    estimate: PoseEstimate | None
    num_matches: int
    num_refined_matches: int = 0
    note: str = ""
    first_pose: Pose | None = None
    inlier_kps: np.ndarray | None = None
    inlier_xyz: np.ndarray | None = None
    first_inliers: int = 0
    candidates_xyz: np.ndarray | None = None

    @property
    def num_inliers(self) -> int:
        return self.estimate.num_inliers if self.estimate is not None else 0

    @property
    def counted_matches(self) -> int:
        """The matches the estimate's inliers are counted among: the refinement's, else the first's."""
        return self.num_refined_matches if self.estimate is not None and self.estimate.matches is not None \
            else self.num_matches


@dataclass
class _Query:
    """The features of one query and what every stage needs of it. ``px``: pixel
    thresholds' scale; ``refine_focal``: the camera was estimated, not given."""

    kps: np.ndarray
    desc: torch.Tensor
    desc_np: np.ndarray
    size: tuple[int, int]
    camera: Camera
    px: float
    refine_focal: bool
    times_ms: dict[str, float]
    image: Path | np.ndarray | None = None  # the query image (the dense retrieval methods read it)
    recognition: object = None  # the recognizer's result on it, once computed (Localizer._recognize)


class Localizer:
    """Loads a map once and localizes query images against it.

    >>> loc = Localizer("maps/kitchen")
    >>> result = loc.localize("query.jpg", Camera.from_string("PINHOLE 640 480 525 525 320 240"))
    """

    def __init__(self, map_path: Path | LandmarkMap, mode: str = "auto", conf: LocalizationConfig | dict | None = None,
                 device: str | None = None):
        if mode not in MODES:
            raise PramlocError(f"unknown mode {mode!r} (choose from {', '.join(MODES)})")
        # Memory-mapped: the processes localizing on one machine share the map's pages.
        self.map = map_path if isinstance(map_path, LandmarkMap) else load_map(map_path, lazy=True)
        mconf = self.map.manifest.get("config", {})
        # The settings given, over those the map keeps from its preset (maps built before
        # presets had them: the defaults); a whole LocalizationConfig is taken as it is.
        if not isinstance(conf, LocalizationConfig):
            conf = LocalizationConfig.from_dict(deep_merge(mconf.get("localization", {}), dict(conf or {})),
                                                "localization")
        self.conf = conf.to_dict()
        self.feature_conf = self.map.manifest["feature"]
        if self.conf["ratio"] is None:  # the ratio test that suits the map's descriptors
            from .features import get_extractor

            self.conf["ratio"] = get_extractor(self.feature_conf.get("name", "sift")).ratio
        self.top_k = RetrievalConfig.of(mconf.get("retrieval"), "retrieval").top_k
        self.mode = mode
        self.device = torch.device(device or "cpu")
        self.index = retrieval_index(self.map) if mode != "recognition" else None
        needs_labels = self.index is not None and "labels" in self.index.needs
        # The map's recognizer, loaded once: the recognition path's, and the labeller of the
        # query's keypoints for a retrieval method that reads labels (landmark-vlad).
        self._labeler = None
        if mode != "retrieval" or needs_labels:
            if self.map.recognizer_path is None:
                if mode == "recognition":
                    raise PramlocError(f"{self.map.path}: map has no recognizer (rebuild without --no-train, "
                                       "or use --mode retrieval)")
                if needs_labels:
                    raise PramlocError(f"{self.map.path}: retrieval method {self.index.method!r} needs the map's "
                                       "recognizer (rebuild without --no-train)")
                logger.warning("%s: map has no recognizer; every query takes the retrieval path.", self.map.path)
            else:
                from .mapio import RECOGNIZER, read_part
                from .recognition import Recognizer

                # Read through the manifest the map was loaded with: never a newer map's model.
                self._labeler = Recognizer.load(self.map.recognizer_path, device=str(self.device),
                                                data=read_part(self.map, RECOGNIZER))
        self.recognizer = self._labeler if mode != "retrieval" else None
        # The cameras of the map images by EXIF camera: a query photo of one gets its intrinsics.
        self.exif_cameras = {k: Camera.from_string(v)
                             for k, v in self.map.manifest.get("stats", {}).get("exif_cameras", {}).items()}
        self._offsets = self.map.landmark_offsets
        self._ranked = None  # within each landmark, points by observations (maps written before: computed)
        if self.recognizer is not None and self.map.manifest.get("points_order") != POINTS_ORDER:
            counts = np.diff(self.map.point_track_offsets())
            self._ranked = np.lexsort((-counts, np.asarray(self.map.point_landmark)))

    def _xyz(self, points: np.ndarray) -> np.ndarray:
        """World coordinates (K, 3) float64 of map points ``points`` (read on demand)."""
        return np.asarray(self.map.xyz[points], np.float64)

    def _descriptors(self, points: np.ndarray) -> np.ndarray:
        """Descriptors (K, D) float32 of map points ``points`` (dequantized on demand)."""
        return np.asarray(self.map.descriptors[points], np.float32)

    # ------------------------------------------------------------------ stages

    def _match(self, q_idx: np.ndarray, desc: torch.Tensor, pts: np.ndarray) -> np.ndarray:
        """Match query keypoints ``q_idx`` to map points ``pts`` (mutual nearest neighbours
        with a ratio test): (K, 2) rows of (keypoint index, point index)."""
        if len(q_idx) == 0 or len(pts) == 0:
            return np.zeros((0, 2), np.int64)
        m, _ = match(desc[torch.from_numpy(q_idx)], torch.from_numpy(self._descriptors(pts)).to(self.device),
                     ratio=self.conf["ratio"], mutual=True)
        m = m.cpu().numpy()
        return np.stack([q_idx[m[:, 0]], pts[m[:, 1]]], 1) if len(m) else np.zeros((0, 2), np.int64)

    def _register_and_refine(self, matches: np.ndarray, q: _Query) -> _Attempt:
        """PnP + RANSAC on ``matches`` (focal length refined for an estimated camera): a first
        pose with ``min_first_inliers``, then refinement against the points of the map images
        co-visible with its inliers; the pose kept needs ``min_inliers``."""
        c = self.conf
        first_min = min(c["min_first_inliers"], c["min_inliers"])
        with _Timer(q.times_ms, "pnp"):
            if len(matches) < 4:
                est, why = None, f"{len(matches)} matches < the 4 of PnP"
            else:
                xyz = self._xyz(matches[:, 1])
                # LO-RANSAC alone: the refinement below re-estimates the pose (refined then)
                est, why = solve_pose(q.kps[matches[:, 0]], xyz, q.camera,
                                      c["ransac_max_error"] * q.px, first_min, seed=c["seed"],
                                      refine_focal=q.refine_focal, refine=False,
                                      threshold="min_inliers" if first_min == c["min_inliers"] else "min_first_inliers")
        if est is None:
            return _Attempt(None, len(matches), note=why)
        refined, pts_xyz = self._refine(est, matches, q)
        num_refined = len(refined.inlier_mask) if refined.matches is not None else 0
        if refined.num_inliers < c["min_inliers"]:
            return _Attempt(None, len(matches), num_refined,
                            f"{refined.num_inliers} inliers < min_inliers {c['min_inliers']} after refinement "
                            f"(first pose {est.num_inliers} inliers of {len(matches)} matches; "
                            + (f"{num_refined} matches by projection)" if num_refined
                               else "the refinement found no better pose)"))
        if refined.matches is not None:  # the refinement's pose
            used = refined.matches[refined.inlier_mask]
            inliers = q.kps[used[:, 0]], pts_xyz[used[:, 1]]
        else:
            inliers = q.kps[matches[est.inlier_mask, 0]], xyz[est.inlier_mask]
        return _Attempt(refined, len(matches), num_refined, first_pose=est.pose if refined is not est else None,
                        inlier_kps=inliers[0], inlier_xyz=inliers[1], first_inliers=est.num_inliers,
                        candidates_xyz=pts_xyz)

    def _refine(self, est: PoseEstimate, matches: np.ndarray, q: _Query) -> tuple[PoseEstimate, np.ndarray]:
        """Re-match by projection against the points of the map images co-visible with the
        inliers (and the inliers' own), then re-estimate (:func:`refine_by_projection`). The
        other points of the first matching (landmarks or retrieved images) are not added: the
        co-visible images hold those in view (7-Scenes: accuracy unchanged, 2 ms less per query).
        Returns the estimate and the world points (P, 3) its ``matches`` index, if any."""
        c = self.conf
        with _Timer(q.times_ms, "refinement"):
            # Map images by how many of the inlier points they observe (ties: map order).
            inliers = np.unique(matches[est.inlier_mask, 1])
            images, counts = np.unique(self.map.point_images(inliers), return_counts=True)
            covis = images[np.argsort(-counts, kind="stable")[: c["covisible_images"]]]
            pts = np.unique(np.concatenate([inliers] + [self.map.image_point_ids(i) for i in covis]))
            xyz = self._xyz(pts)
            # The refined estimate, unless it has fewer inliers than the first.
            return refine_by_projection(est, q.camera, q.kps, q.desc_np, xyz, self._descriptors(pts),
                                        c["refine_radius"] * q.px, c["ratio"], c["refine_max_error"] * q.px,
                                        c["min_inliers"], seed=c["seed"], refine_focal=q.refine_focal), xyz

    def _recognition_path(self, q: _Query, res: QueryResult) -> _Attempt:
        c = self.conf
        with _Timer(q.times_ms, "recognition"):
            rec = self._recognize(q)
            ranked = rec.ranked()
        res.landmarks = ranked[: c["max_landmarks"]].tolist()
        k = self._group_size(rec, ranked)
        votes = float(rec.votes[ranked[:k]].sum())
        if votes < c["min_votes"]:
            res.votes = [round(float(rec.votes[l]), 2) for l in res.landmarks]
            res.visibility = [round(float(rec.visibility[l]), 4) for l in res.landmarks]
            return _Attempt(None, 0, note=f"recognition unsure: votes {votes:.2f} < min_votes {c['min_votes']:g}")
        # Hypotheses: groups of landmarks, each matched as one region (every keypoint against
        # all of their points: a keypoint's own label is wrong too often to restrict its
        # candidates), in turn until a confident pose: the top landmarks by predicted
        # visibility, then by keypoint votes (the recognizer's two heads disagree on some
        # views), then the next ones.
        # Last resorts, when none gave a pose, with every keypoint: the first group with every
        # point of its landmarks (a view of their less-observed parts; 7-Scenes block: one query
        # of 134; a recognizer that gives a view to one landmark: Strecha 2 queries of 12, South
        # Building 4 of 16); then, in recognition mode (no retrieval to fall back on), the next
        # landmarks not tried yet by predicted visibility, until a pose (South Building: 1 more).
        # Each step: (landmarks, points per landmark, keypoints matched, last resort).
        best, tried = None, []
        n_all, n_strong = len(q.kps), min(len(q.kps), c["match_keypoints"])
        steps = [(g, c["landmark_points"], n_strong, False) for g in self._hypotheses(rec, ranked, k)]
        if c["landmark_points"] is not None:
            steps.append((ranked[:k], None, n_all, True))
        if self.mode == "recognition":
            steps = chain(steps, ((g, c["landmark_points"], n_all, True) for g in self._untried(rec, tried, k)))
        for group, limit, num_kps, last_resort in steps:
            if last_resort and best is not None and best.estimate is not None:
                break
            with _Timer(q.times_ms, "matching"):
                pts = self._landmark_points(group, limit)
                matches = self._match(np.arange(num_kps), q.desc, pts)
            attempt = self._register_and_refine(matches, q)
            tried += [l for l in group.tolist() if l not in tried]
            if best is None or (attempt.num_inliers, attempt.num_matches) > (best.num_inliers, best.num_matches):
                best = attempt
            if best.num_inliers >= c["confident_inliers"]:
                break
        res.landmarks = tried  # every landmark matched, in order
        res.votes = [round(float(rec.votes[l]), 2) for l in res.landmarks]
        res.visibility = [round(float(rec.visibility[l]), 4) for l in res.landmarks]
        if best is None:
            return _Attempt(None, 0, note="recognition: no landmark to match")
        if best.estimate is None:
            best.note = f"recognition ({len(tried)} landmarks): {best.note}"
        return best

    def _recognize(self, q: _Query):
        """The recognizer's result on the query's strongest ``recognition_keypoints`` keypoints
        (features are sorted by score; attention cost grows with the square of their number),
        computed once per query: the recognition path and a retrieval method that reads
        keypoint labels share it."""
        if q.recognition is None:
            n = min(len(q.kps), self.conf["recognition_keypoints"])
            q.recognition = self._labeler.recognize(q.kps[:n], q.desc_np[:n], q.size)
        return q.recognition

    def _group_size(self, rec, ranked: np.ndarray) -> int:
        """Landmarks per hypothesis: as many as hold ``landmark_visibility`` of the predicted
        visibility (few when the view is dominated by some landmarks, more when it spreads
        over many, as on a facade), at most ``max_landmarks``."""
        share = np.cumsum(rec.visibility[ranked]) / max(float(rec.visibility.sum()), 1e-9)
        return int(min(np.searchsorted(share, self.conf["landmark_visibility"]) + 1, self.conf["max_landmarks"]))

    def _hypotheses(self, rec, ranked: np.ndarray, k: int):
        """Up to ``hypotheses`` groups of ``k`` landmarks (:meth:`_group_size`), each bringing
        new ones: by visibility (``ranked``) and by votes in turn."""
        seen, n = set(), 0
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

    def _untried(self, rec, tried: list[int], k: int):
        """Groups of at least ``k`` and 4 landmarks not in ``tried`` (read when the first
        group is drawn), by decreasing predicted visibility: the next ``max_landmarks`` of
        them only (a query from elsewhere must not sweep a map of thousands of landmarks)."""
        seen = set(tried)
        order = np.argsort(-rec.visibility, kind="stable").tolist()
        rest = [l for l in order if l not in seen][: self.conf["max_landmarks"]]
        size = max(k, 4)
        for start in range(0, len(rest), size):
            yield np.array(rest[start:start + size], dtype=np.int64)

    def _landmark_points(self, landmarks: np.ndarray, n: int | None) -> np.ndarray:
        """The points of ``landmarks`` matched: of each, the ``n`` seen by the most map images
        (points are stored in that order within a landmark), or all (``n`` None)."""
        o = self._offsets
        pts = np.concatenate([np.arange(o[l], o[l + 1] if n is None else min(o[l] + n, o[l + 1])) for l in landmarks])
        return pts if self._ranked is None or n is None else np.sort(self._ranked[pts])

    def _retrieval_path(self, q: _Query, res: QueryResult) -> _Attempt:
        with _Timer(q.times_ms, "retrieval"):
            query = RetrievalInput(descriptors=q.desc_np, keypoints=q.kps, image=q.image)
            if "labels" in self.index.needs:  # landmark-vlad: the regions of the recognizer's labels
                query.labels = self._recognize(q).labels
                query.keypoints = q.kps[:len(query.labels)]
            idx, _ = self.index.search(self.index.describe(query), self.top_k)
            res.retrieved = [self.map.image_names[i] for i in idx]
            pts = np.unique(np.concatenate([self.map.image_point_ids(i) for i in idx]))
        with _Timer(q.times_ms, "matching"):
            matches = self._match(np.arange(len(q.kps)), q.desc, pts)
        attempt = self._register_and_refine(matches, q)
        if attempt.estimate is None:
            attempt.note = f"retrieval ({len(idx)} images): {attempt.note}"
        return attempt

    # ------------------------------------------------------------------ public

    def localize(self, image: Path | np.ndarray, camera: Camera | None = None, name: str | None = None) -> QueryResult:
        """Localize one image (a path, or a grayscale (H, W) uint8 array) taken with
        ``camera`` (intrinsics at the image's own resolution, or at another of the same
        aspect ratio: scaled). Without ``camera``, the intrinsics are estimated (from a
        path's EXIF, else a guess: :mod:`pramloc.intrinsics`) and the focal length is
        refined with the pose. Never raises for a bad query: a failure is returned with
        its reason."""
        name = name or (str(image) if not isinstance(image, np.ndarray) else "image")
        res = QueryResult(name, map=str(self.map.path))
        try:
            with _Timer(res.times_ms, "features"):
                f = (extract_image(image, self.feature_conf) if isinstance(image, np.ndarray)
                     else extract_path(image, self.feature_conf))
            size = w, h = tuple(int(v) for v in f["image_size"])
            if camera is not None:
                res.intrinsics = "given"
            else:
                camera, res.intrinsics = self._estimate_camera(image, w, h)
                res.focal_initial = float(camera.K()[0, 0])
            if (w, h) != (camera.width, camera.height):
                if abs(w / h - camera.width / camera.height) > 0.01:
                    res.reason = size_mismatch(name, (w, h), camera)
                    return res
                if res.intrinsics == "given":  # said, never silent: e.g. a 640x480 calibration on a 12 MP photo
                    res.notes["camera"] = (f"the given camera is for {camera.width}x{camera.height}, scaled to "
                                           f"the image's {w}x{h}")
                camera = camera.scaled(w / camera.width, h / camera.height)
            kps, desc_np = f["keypoints"].astype(np.float64), f["descriptors"]
            res.num_keypoints = len(kps)
            if len(kps) < 4:
                res.reason = f"too few keypoints ({len(kps)} < the 4 of PnP)"
                return res
            # Pixel thresholds are set at the extraction resolution: scale them up for images
            # that were downscaled for extraction (e.g. 3072 px photos at max_side 1024).
            px = max(1.0, max(size) / (self.feature_conf.get("max_side") or max(size)))
            q = _Query(kps, torch.from_numpy(desc_np).to(self.device), desc_np, size, camera, px,
                       res.intrinsics != "given" and not res.intrinsics.startswith(SOURCE_MAP), res.times_ms, image)
            self._localize(q, res)
        except PramlocError as err:
            res.reason = str(err)
        return res

    def _estimate_camera(self, image: Path | np.ndarray, w: int, h: int) -> tuple[Camera, str]:
        """The intrinsics of a query given without: the map's camera of the same EXIF camera
        (calibrated with the map, kept as it is), else EXIF's focal length or a guess (refined
        in PnP). Returns the camera and where it comes from."""
        if isinstance(image, np.ndarray):
            return guess_camera(w, h), SOURCE_GUESS
        info = photo_camera(image)
        if info.key in self.exif_cameras:
            return self.exif_cameras[info.key], f"{SOURCE_MAP} ({info.key})"
        return info.camera, info.source

    def _localize(self, q: _Query, res: QueryResult) -> None:
        """The paths of the mode (see the module docstring), their outcome written to ``res``."""
        attempts: dict[str, _Attempt] = {}
        if self.recognizer is not None and self.mode != "retrieval":
            attempts["recognition"] = self._recognition_path(q, res)
        first = attempts.get("recognition")
        if (first is None or first.num_inliers < self.conf["confident_inliers"]) and self.mode != "recognition":
            if first is not None and first.estimate is not None:
                first.note = (f"recognition pose: {first.num_inliers} inliers < confident_inliers "
                              f"{self.conf['confident_inliers']}, retrieval tried")
            attempts["retrieval"] = self._retrieval_path(q, res)
        for path, a in attempts.items():
            if a.estimate is not None and not a.note:
                a.note = f"{path} pose: {a.num_inliers} inliers"
        res.notes.update({path: a.note for path, a in attempts.items()})
        won = [p for p, a in attempts.items() if a.estimate is not None]
        if not won:
            res.num_matches = max(a.num_matches for a in attempts.values())
            res.reason = "; ".join(a.note for a in attempts.values())
            return
        res.path = max(won, key=lambda p: attempts[p].num_inliers)  # recognition first on a tie
        a = attempts[res.path]
        est = a.estimate
        res.pose, res.num_inliers = est.pose, int(est.num_inliers)
        res.num_matches, res.num_refined_matches = a.num_matches, a.num_refined_matches
        res.pose_from = "refinement" if est.matches is not None else "first matching"
        res.camera = est.camera or q.camera
        res.focal = float(res.camera.K()[0, 0])
        with _Timer(q.times_ms, "confidence"):
            self._assess(q, res, a, [attempts[p].estimate.pose for p in won if p != res.path])

    def _assess(self, q: _Query, res: QueryResult, a: _Attempt, others: list[Pose]) -> None:
        """The confidence of ``res``'s pose from attempt ``a`` (``others``: the other path's
        pose, when it gave one), written to ``res`` (:mod:`pramloc.confidence`)."""
        from . import confidence

        ev = confidence.Evidence(res.pose, a.estimate.camera or q.camera, q.size, q.px, a.inlier_kps,
                                 a.inlier_xyz, a.counted_matches, res.path, a.first_pose,
                                 others[0] if others else None, tuple(res.votes),
                                 res.focal_initial if q.refine_focal else None,
                                 a.first_inliers, a.num_matches, a.candidates_xyz)
        x = confidence.features(ev)  # looked up on the module: a test may watch what it is given
        res.confidence_features = {k: round(float(v), 4) for k, v in zip(confidence.FEATURES, x)}
        res.confidence, res.confident = confidence.score(x)
        if res.confidence is not None:
            res.confidence = round(res.confidence, 4)


def query_list(dataset: str | None = None, root: Path | None = None, images: Path | None = None,
               queries: Path | None = None, camera: Camera | None = None) -> list[tuple[str, Path, Camera | None]]:
    """(name, path, camera) of the queries: a dataset split (``dataset``, ``root``,
    ``queries``), an hloc query list (``images``, ``queries``: ``name MODEL W H params``,
    ``camera`` for lines without intrinsics), or every image of the folder ``images``
    (names relative to it). A camera is None where none is known: the
    localizer estimates it (:meth:`Localizer.localize`)."""
    from .datasets import load_dataset
    from .io import read_query_list

    if dataset:
        scene = load_dataset(dataset, root, queries)
        return [(im.name, scene.path(im.name), im.camera or camera) for im in scene.images]
    if images is None:
        raise PramlocError("give an image, a folder of images, --images DIR (with --queries LIST to pick some), "
                           "or --dataset/--root/--queries")
    if queries is None:  # every image of the folder
        from .datasets import list_images

        return [(name, Path(images) / name, camera) for name in list_images(Path(images))]
    return [(name, Path(images) / name, cam or camera) for name, cam in read_query_list(queries).items()]


def write_results(results: list[QueryResult], out: Path | None, log_path: Path | None = None) -> list[Path]:
    """Write localized ``results`` as ``out`` (``name qw qx qy qz tx ty tz`` lines) and their
    records as the JSON-lines log ``log_path`` (default beside ``out``); either may be None
    (not both). Returns the paths written."""
    from .io import log_path as default_log_path

    log_path = Path(log_path) if log_path else (default_log_path(out) if out is not None else None)
    written = []
    for path, column in ((out, 0), (log_path, 1)):
        if path is not None:
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(r.lines()[column] for r in results))
            written.append(path)
    return written


@dataclass
class ImageBytes:
    """A query image's file content, sent to a worker that may not see the file (Ray)."""

    data: bytes
    suffix: str


def _localize_item(loc: Localizer, query: tuple[str, Path | ImageBytes, Camera | None]) -> QueryResult:
    """One query of :func:`main` on a worker's localizer (see :mod:`pramloc.parallel`)."""
    name, path, camera = query
    if isinstance(path, ImageBytes):  # the same file, local to the worker (EXIF included)
        import tempfile

        with tempfile.NamedTemporaryFile(suffix=path.suffix) as f:
            f.write(path.data)
            f.flush()
            return loc.localize(Path(f.name), camera, name)
    return loc.localize(path, camera, name)


def _worker_localizer(map_path: Path, mode: str, conf, device: str | None) -> Localizer:
    """A worker's localizer: on ``device``, else on the GPU Ray gave the worker, if any."""
    if device is None and torch.cuda.is_available():
        device = "cuda"
    return Localizer(map_path, mode, conf, device)


def _with_bytes(queries: list[tuple[str, Path, Camera | None]]):
    """The queries with their images' bytes instead of their paths, read one at a time."""
    for name, path, camera in queries:
        yield name, ImageBytes(Path(path).read_bytes(), Path(path).suffix), camera


def main(map_path: Path, queries: list[tuple[str, Path, Camera | None]], out: Path, mode: str = "auto",
         conf: LocalizationConfig | dict | None = None, device: str | None = None,
         log_path: Path | None = None, workers: int = 1, ray: bool = False,
         ray_address: str | None = None, send_bytes: bool = False) -> dict:
    """Localize ``queries`` ((name, image path, camera or None) triples) and stream the results:
    ``out`` gets ``name qw qx qy qz tx ty tz`` per localized query (hloc format) and
    ``log_path`` (default ``out`` + ``_log.jsonl``) one JSON record per query, failed
    ones included. ``workers`` processes (or, with ``ray``, Ray actors on the cluster at
    ``ray_address``, a local one by default) each load the map once; results are written
    in query order and do not depend on the number of workers. ``send_bytes``: send the
    workers the images' bytes rather than their paths (workers without the shared storage).
    Returns a summary."""
    import functools
    import time

    from .io import log_path as default_log_path
    from .parallel import map_ordered
    from .progress import track

    if mode not in MODES:
        raise PramlocError(f"unknown mode {mode!r} (choose from {', '.join(MODES)})")
    t0 = time.perf_counter()
    if workers <= 1 and not ray:
        loc = Localizer(map_path, mode, conf, device)  # errors (map, mode) raised here, before any output
        make = lambda: loc  # noqa: E731
    else:
        load_map(map_path, lazy=True)  # a missing or broken map is one error here, not one per worker
        make = functools.partial(_worker_localizer if ray else Localizer, map_path, mode, conf, device)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    log_path = Path(log_path) if log_path else default_log_path(out)
    counts = {"recognition": 0, "retrieval": 0, "failed": 0}
    totals = []
    with open(out, "w") as fo, open(log_path, "w") as fl:
        items = _with_bytes(queries) if send_bytes else queries
        results = map_ordered(make, _localize_item, items, workers=workers, ray=ray, ray_address=ray_address)
        for r in track(results, desc=f"localize ({mode})", total=len(queries)):
            name = r.name
            counts[r.path] += 1
            totals.append(sum(r.times_ms.values()))
            if r.pose is None:
                logger.debug("%s: failed: %s", name, r.reason)
            line, record = r.lines()
            fo.write(line)
            fl.write(record)
            fo.flush()
            fl.flush()
    summary = {"queries": len(queries), **counts, "results": str(out), "log": str(log_path),
               "median_time_ms": round(float(np.median(totals)), 2) if totals else 0.0,
               "wall_s": round(time.perf_counter() - t0, 3), "workers": workers, "ray": ray}
    logger.info("Localized %d/%d queries (recognition %d, retrieval %d, failed %d); results in %s",
                len(queries) - counts["failed"], len(queries), counts["recognition"], counts["retrieval"],
                counts["failed"], out)
    return summary
