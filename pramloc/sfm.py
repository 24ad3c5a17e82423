"""Sparse 3D models with pycolmap: triangulation from known poses (as hloc does) or
full incremental structure-from-motion when only images are given.

Keypoints in the features file use the hloc convention (top-left pixel centre at (0, 0));
COLMAP's origin is the pixel corner, so 0.5 is added when they enter COLMAP.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pycolmap

from . import logger
from . import pairs as pairs_mod
from .config import FeatureConfig, TriangulationConfig
from .datasets import Scene
from .errors import PramlocError
from .geometry import Camera, Pose
from .io import read_features
from .matching import match
from .progress import track


def pairs_from_poses(scene: Scene, num_pairs: int, max_distance: float | None = None,
                     max_angle: float = 90.0) -> list[tuple[str, str]]:
    """:func:`pramloc.pairs.from_poses` of the scene's posed images."""
    return pairs_mod.from_poses(scene.names, np.stack([scene[n].pose.center for n in scene.names]),
                                np.stack([scene[n].pose.R[2] for n in scene.names]), num_pairs, max_distance,
                                max_angle)


def _fundamental(cam0: Camera, pose0: Pose, cam1: Camera, pose1: Pose) -> np.ndarray:
    R = pose1.R @ pose0.R.T
    t = pose1.tvec - R @ pose0.tvec
    tx = np.array([[0, -t[2], t[1]], [t[2], 0, -t[0]], [-t[1], t[0], 0]])
    return np.linalg.inv(cam1.K()).T @ (tx @ R) @ np.linalg.inv(cam0.K())


def sampson_error(F: np.ndarray, x0: np.ndarray, x1: np.ndarray) -> np.ndarray:
    """Sampson distance (px^2) of correspondences x0 (N,2) <-> x1 (N,2) under F."""
    h0 = np.concatenate([x0, np.ones((len(x0), 1))], 1)
    h1 = np.concatenate([x1, np.ones((len(x1), 1))], 1)
    Fx0 = h0 @ F.T
    Ftx1 = h1 @ F
    num = np.sum(h1 * Fx0, 1) ** 2
    den = Fx0[:, 0] ** 2 + Fx0[:, 1] ** 2 + Ftx1[:, 0] ** 2 + Ftx1[:, 1] ** 2
    return num / np.maximum(den, 1e-12)


@dataclass
class CameraGroup:
    """Photos that share one camera in structure-from-motion: ``key`` (the EXIF camera,
    :class:`pramloc.intrinsics.PhotoCamera`; None: a photo without one, alone in its group),
    the ``prior`` camera (EXIF focal length, or the stated guess; ``source`` says which)."""

    key: str | None
    names: list[str]
    prior: Camera
    source: str

    def record(self) -> dict:
        return {"key": self.key, "images": len(self.names), "prior": self.prior.to_string(), "source": self.source}


def camera_groups(scene: Scene, sizes: dict[str, tuple[int, int]]) -> list[CameraGroup]:
    """One group per physical camera and zoom of the photos (EXIF make, model, size and
    focal length), a group of its own for each photo whose EXIF does not say; in order of
    first appearance. A scene camera that is known (given intrinsics) is its photo's prior.
    ``sizes``: (W, H) of each image as displayed (the features'), for photos whose EXIF
    cannot be read."""
    from .intrinsics import SOURCE_GUESS, guess_camera, photo_camera

    groups: dict[str, CameraGroup] = {}
    out: list[CameraGroup] = []
    for im in scene.images:
        if im.camera is not None:
            out.append(CameraGroup(None, [im.name], im.camera, "given"))
            continue
        try:
            info = photo_camera(scene.path(im.name))
        except PramlocError:  # the features were extracted, so OpenCV reads it: no EXIF to be had
            w, h = sizes[im.name]
            out.append(CameraGroup(None, [im.name], guess_camera(w, h), SOURCE_GUESS))
            continue
        if info.key is not None and info.key in groups:
            groups[info.key].names.append(im.name)
            continue
        group = CameraGroup(info.key, [im.name], info.camera, info.source)
        out.append(group)
        if info.key is not None:
            groups[info.key] = group
    return out


def _sfm_camera(group: CameraGroup, camera_id: int, width: int, height: int) -> pycolmap.Camera:
    """The pycolmap camera of ``group`` at the features' image size: a given camera as it is
    (kept fixed), else SIMPLE_RADIAL from the prior focal length (marked as a prior when it
    comes from EXIF)."""
    from .intrinsics import SOURCE_GUESS

    if group.source == "given":
        cam = group.prior.to_pycolmap()
        cam.has_prior_focal_length = True
    else:
        prior = group.prior.scaled(width / group.prior.width, height / group.prior.height)
        f = float(prior.K()[0, 0])
        cam = pycolmap.Camera(model="SIMPLE_RADIAL", width=width, height=height,
                              params=[f, width / 2, height / 2, 0.0])
        cam.has_prior_focal_length = group.source != SOURCE_GUESS
    cam.camera_id = camera_id
    return cam


def _write_database(db_path: Path, scene: Scene, features: Path, rec: pycolmap.Reconstruction | None,
                    groups: list[CameraGroup] | None = None):
    """Cameras, rigs, frames, images and keypoints into a new COLMAP database: those of
    ``rec`` (known poses), else one camera per group of ``groups`` (structure-from-motion)."""
    if db_path.exists():
        db_path.unlink()
    ids = {n: i for i, n in enumerate(scene.names, 1)}
    with pycolmap.Database.open(str(db_path)) as db:
        if rec is not None:
            for cam in rec.cameras.values():
                db.write_camera(cam, use_camera_id=True)
            for rig in rec.rigs.values():
                db.write_rig(rig, use_rig_id=True)
            for frame in rec.frames.values():
                db.write_frame(frame, use_frame_id=True)
            images = {im.name: im for im in rec.images.values()}
        kps = {name: read_features(features, name) for name in scene.names}
        if rec is None:
            for camera_id, group in enumerate(groups, 1):
                w, h = (int(v) for v in kps[group.names[0]]["image_size"])
                cam = _sfm_camera(group, camera_id, w, h)
                db.write_camera(cam, use_camera_id=True)
                rig = pycolmap.Rig(rig_id=camera_id)  # a rig of one camera, one frame per photo
                rig.add_ref_sensor(cam.sensor_id)
                db.write_rig(rig, use_rig_id=True)
                for name in group.names:
                    i = ids[name]
                    frame = pycolmap.Frame(frame_id=i, rig_id=camera_id)
                    frame.add_data_id(pycolmap.data_t(cam.sensor_id, i))
                    db.write_frame(frame, use_frame_id=True)
                    image = pycolmap.Image(name=name, camera_id=camera_id, image_id=i)
                    image.frame_id = i
                    db.write_image(image, use_image_id=True)
        else:
            for name in scene.names:
                db.write_image(images[name], use_image_id=True)
        for name in scene.names:
            db.write_keypoints(ids[name], kps[name]["keypoints"].astype(np.float32) + 0.5)


def known_pose_model(names: list[str], cameras: list[Camera], poses: list[Pose],
                     keypoints: list[np.ndarray]) -> pycolmap.Reconstruction:
    """A pycolmap model of posed images without 3D points: one camera per distinct
    intrinsics (ids 1.. in order of first use), image ``i`` (id ``i + 1``) named ``names[i]``
    with world-to-camera pose ``poses[i]`` and 2D points ``keypoints[i]`` (N_i, 2) in the
    features' convention (pixel centres at integers; COLMAP's + 0.5 is added here)."""
    rec = pycolmap.Reconstruction()
    cam_ids: dict[str, int] = {}
    for cam in cameras:
        key = cam.to_string()
        if key not in cam_ids:
            c = cam.to_pycolmap()
            c.camera_id = cam_ids[key] = len(cam_ids) + 1
            rec.add_camera_with_trivial_rig(c)
    for i, (name, cam, pose, kps) in enumerate(zip(names, cameras, poses, keypoints), 1):
        image = pycolmap.Image(name=name, keypoints=np.asarray(kps, np.float64) + 0.5,
                               camera_id=cam_ids[cam.to_string()], image_id=i)
        rec.add_image_with_trivial_frame(image, pose.to_pycolmap())
    return rec


def map_model(m) -> pycolmap.Reconstruction:
    """The COLMAP model of a :class:`pramloc.mapio.LandmarkMap`: its cameras, posed images
    whose 2D points are the stored observations, and its 3D points with their tracks."""
    o = m.image_offsets
    rec = known_pose_model(m.image_names, m.cameras, m.poses,
                           [m.image_keypoints[s:e] for s, e in zip(o[:-1], o[1:])])
    tracks: dict[int, list] = {}
    for i in range(len(m.image_names)):
        for j, p in enumerate(m.image_point_ids(i)):
            tracks.setdefault(int(p), []).append((i + 1, j))
    for p in range(len(m.xyz)):
        track = pycolmap.Track()
        for image_id, idx in tracks.get(p, []):
            track.add_element(image_id, idx)
        rec.add_point3D(m.xyz[p].astype(np.float64), track, m.color[p])
    return rec


def export_map(map_path: Path, out: Path) -> Path:
    """Write the COLMAP model (binary) of the map folder ``map_path`` into ``out`` (created;
    COLMAP's files in it are replaced), for COLMAP's GUI or any COLMAP reader. Returns ``out``."""
    from .mapio import load_map

    rec = map_model(load_map(map_path))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rec.write(str(out))
    return out


MATCHERS = ("nn", "lightglue", "auto")
MIN_PAIRS_PER_WORKER = 64  # fewer pairs per worker: matched in this process (see parallel.map_ordered)


def pair_matcher(conf: TriangulationConfig, feature_conf: FeatureConfig | None, num_pairs: int, sfm: bool) -> str:
    """``nn`` or ``lightglue`` for ``conf.matcher``: ``auto`` is LightGlue for
    structure-from-motion (no poses to verify the matches) with an extractor that has
    LightGlue weights and at most ``conf.lightglue_max_pairs`` pairs (seconds per pair on a
    CPU), else mutual nearest neighbours. Known-pose triangulation keeps nn (its pairs are
    verified by the poses, and there are thousands of them)."""
    from .glue import WEIGHTS

    if conf.matcher not in MATCHERS:
        raise PramlocError(f"unknown triangulation.matcher {conf.matcher!r} (known: {', '.join(MATCHERS)})")
    if conf.matcher != "auto":
        return conf.matcher
    name = (feature_conf or FeatureConfig()).name
    return "lightglue" if sfm and name in WEIGHTS and num_pairs <= conf.lightglue_max_pairs else "nn"


def _cached_features(cache: dict, features: Path, name: str) -> dict:
    if name not in cache:
        if len(cache) > 64:
            cache.pop(next(iter(cache)))
        cache[name] = read_features(features, name)
    return cache[name]


def _match_pair(features: Path, ratio: float, max_epipolar_error: float, matcher: str, feature_conf: FeatureConfig,
                cache: dict, pair: tuple[str, str, np.ndarray | None]) -> np.ndarray:
    """Matches of one pair (a, b, F or None) of :func:`_match_pairs` (on a worker whose
    ``cache`` keeps recently read features)."""
    a, b, F = pair
    fa, fb = _cached_features(cache, features, a), _cached_features(cache, features, b)
    if matcher == "lightglue":
        from . import glue

        m = glue.match_pair(feature_conf.name, fa, fb, device=feature_conf.device)
    else:
        m = match(fa["descriptors"], fb["descriptors"], ratio=ratio, mutual=True)[0]
    if F is not None and len(m):
        err = sampson_error(F, fa["keypoints"][m[:, 0]] + 0.5, fb["keypoints"][m[:, 1]] + 0.5)
        m = m[err < max_epipolar_error ** 2]
    return m


def _match_pairs(scene: Scene, features: Path, pairs: list[tuple[str, str]], ratio: float,
                 known_poses: bool, max_epipolar_error: float = 4.0, matcher: str = "nn",
                 feature_conf: FeatureConfig | None = None, workers: int = 1):
    """Match each pair (``matcher``: ``nn`` mutual nearest neighbours with the ratio test, or
    ``lightglue``, the learned matcher of ``feature_conf.name``'s descriptors) on ``workers``
    processes (:mod:`pramloc.parallel`); with known poses keep matches with Sampson error
    below the threshold (geometric verification from the given poses, no RANSAC needed)."""
    import functools

    from .parallel import map_ordered

    if matcher not in ("nn", "lightglue"):
        raise PramlocError(f"unknown pair matcher {matcher!r} (nn or lightglue)")
    feature_conf = feature_conf or FeatureConfig()
    if matcher == "lightglue":
        from . import glue

        glue.load(feature_conf.name)  # fails now, not after the first pair, without weights
    items = [(a, b, _fundamental(scene[a].camera, scene[a].pose, scene[b].camera, scene[b].pose)
              if known_poses else None) for a, b in pairs]
    call = functools.partial(_match_pair, Path(features), ratio, max_epipolar_error, matcher, feature_conf)
    results = map_ordered(dict, call, items, workers=workers, min_items_per_worker=MIN_PAIRS_PER_WORKER)
    return {(a, b): m for (a, b), m in zip(pairs, track(results, desc="matching", total=len(pairs)))}


def triangulate(scene: Scene, features: Path, work_dir: Path, conf: TriangulationConfig,
                feature_conf: FeatureConfig | None = None, workers: int = 1) -> pycolmap.Reconstruction:
    """Triangulate 3D points with the scene's known cameras and poses (kept fixed);
    ``feature_conf``: the features' config (which learned matcher fits them); ``workers``:
    processes for pair matching.

    Returns the reconstruction; its ``points2D`` are the features file's keypoints
    (same order), so ``point2D_idx`` indexes the keypoints of that image.
    """
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    missing = [im.name for im in scene.images if im.pose is None or im.camera is None]
    if missing:
        raise PramlocError(f"image {missing[0]!r} has no known pose or camera; cannot triangulate")
    pairs = pairs_from_poses(scene, conf.num_pairs, conf.max_pair_distance, conf.min_overlap_angle)
    logger.info("Matching %d image pairs selected by pose.", len(pairs))
    matches = _match_pairs(scene, features, pairs, conf.ratio, known_poses=True,
                           max_epipolar_error=conf.max_epipolar_error,
                           matcher=pair_matcher(conf, feature_conf, len(pairs), sfm=False), feature_conf=feature_conf,
                           workers=workers)
    rec = known_pose_model(scene.names, [im.camera for im in scene.images], [im.pose for im in scene.images],
                           [read_features(features, n)["keypoints"] for n in scene.names])
    logger.info("Triangulating with known poses (pycolmap).")
    return triangulate_matches(rec, scene, features, matches, work_dir, conf, clear_points=True)


def triangulate_matches(rec: pycolmap.Reconstruction, scene: Scene, features: Path,
                        matches: dict[tuple[str, str], np.ndarray], work_dir: Path, conf: TriangulationConfig,
                        clear_points: bool = True) -> pycolmap.Reconstruction:
    """pycolmap's point triangulation from ``matches`` ((a, b) -> (K, 2) keypoint indices,
    verified) between the posed images of ``rec`` (image ``i + 1`` = ``scene.names[i]``, its
    2D points the features file's keypoints); poses and intrinsics stay fixed. With
    ``clear_points`` False the points of ``rec`` are kept: matches of keypoints that observe
    one extend its track, the others make new points (``update-map``)."""
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    db_path = work_dir / "database.db"
    _write_database(db_path, scene, features, rec)
    ids = {n: i for i, n in enumerate(scene.names, 1)}
    with pycolmap.Database.open(str(db_path)) as db:
        for (a, b), m in matches.items():
            m = m.astype(np.uint32)
            db.write_matches(ids[a], ids[b], m)
            db.write_two_view_geometry(ids[a], ids[b], pycolmap.TwoViewGeometry(
                config=pycolmap.TwoViewGeometryConfiguration.CALIBRATED, inlier_matches=m))
    opts = pycolmap.IncrementalPipelineOptions()
    opts.triangulation.min_angle = conf.min_tri_angle
    opts.triangulation.complete_max_reproj_error = conf.max_reproj_error
    opts.triangulation.merge_max_reproj_error = conf.max_reproj_error
    opts.triangulation.ignore_two_view_tracks = False
    opts.mapper.filter_max_reproj_error = conf.max_reproj_error
    out = work_dir / "triangulated"
    out.mkdir(exist_ok=True)
    rec = pycolmap.triangulate_points(rec, str(db_path), str(scene.image_dir), str(out),
                                      clear_points=clear_points, options=opts, refine_intrinsics=False)
    db_path.unlink()
    return rec


@dataclass
class SfmResult:
    """Structure-from-motion's outcome: the largest ``model``, the camera ``groups`` the photos
    were given, and the photos it could not register with the reason (name -> reason)."""

    model: pycolmap.Reconstruction
    groups: list[CameraGroup]
    unregistered: dict[str, str]

    def report(self) -> dict:
        """What the manifest records of it."""
        return {"cameras": [g.record() for g in self.groups],
                "unregistered": [{"name": n, "reason": r} for n, r in self.unregistered.items()]}


def reconstruct(scene: Scene, features: Path, work_dir: Path, conf: TriangulationConfig,
                seed: int = 0, feature_conf: FeatureConfig | None = None, workers: int = 1,
                pairs: list[tuple[str, str]] | None = None) -> SfmResult:
    """Structure-from-motion from images alone (``pairs``, by default all of them, verified
    by two-view RANSAC; incremental mapping seeded with ``seed``). Poses are ignored. Photos
    of one camera (:func:`camera_groups`) share intrinsics, refined from their EXIF focal
    length; when every image has a camera, the intrinsics are those and stay fixed.

    Returns the largest model and, for each photo it lacks, why (:class:`SfmResult`).
    """
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    pairs = pairs_mod.exhaustive(scene.names) if pairs is None else pairs
    matcher = pair_matcher(conf, feature_conf, len(pairs), sfm=True)
    logger.info("Structure-from-motion: matching %d image pairs (%s).", len(pairs), matcher)
    matches = _match_pairs(scene, features, pairs, conf.sfm_ratio, known_poses=False, matcher=matcher,
                           feature_conf=feature_conf, workers=workers)
    sizes = {n: tuple(int(v) for v in read_features(features, n)["image_size"]) for n in scene.names}
    groups = camera_groups(scene, sizes)
    for g in groups:
        if len(g.names) > 1 or g.key is not None:
            logger.info("Camera %s: %d photo(s), focal length from %s.", g.key, len(g.names), g.source)
    if sum(g.key is None and g.source != "given" for g in groups):
        logger.info("%d photo(s) without EXIF camera make, model or focal length: a camera each.",
                    sum(g.key is None and g.source != "given" for g in groups))
    db_path = work_dir / "database.db"
    _write_database(db_path, scene, features, None, groups)
    ids = {n: i for i, n in enumerate(scene.names, 1)}
    pairs_txt = work_dir / "pairs.txt"
    with pycolmap.Database.open(str(db_path)) as db:
        for (a, b), m in matches.items():
            db.write_matches(ids[a], ids[b], m.astype(np.uint32))
    pairs_txt.write_text("".join(f"{a} {b}\n" for a, b in matches))
    logger.info("Verifying the matches of %d pairs (two-view geometry, pycolmap).", len(matches))
    pycolmap.verify_matches(str(db_path), str(pairs_txt))
    out = work_dir / "sfm"
    if out.exists():
        shutil.rmtree(out)
    out.mkdir()
    opts = pycolmap.IncrementalPipelineOptions()
    opts.triangulation.ignore_two_view_tracks = False
    opts.random_seed = seed
    opts.mapper.init_min_tri_angle = conf.sfm_init_min_tri_angle
    opts.mapper.abs_pose_min_num_inliers = conf.sfm_min_inliers
    if all(im.camera is not None for im in scene.images):  # known intrinsics: keep them
        opts.ba_refine_focal_length = opts.ba_refine_principal_point = opts.ba_refine_extra_params = False
        opts.mapper.abs_pose_refine_focal_length = opts.mapper.abs_pose_refine_extra_params = False
    logger.info("Running incremental mapping (pycolmap).")
    models = pycolmap.incremental_mapping(str(db_path), str(scene.image_dir), str(out), options=opts)
    if not models:
        db_path.unlink()
        raise PramlocError(f"{scene.image_dir}: structure-from-motion registered no images "
                           "(too little overlap or texture)")
    rec = max(models.values(), key=lambda r: r.num_reg_images())
    with pycolmap.Database.open(str(db_path)) as db:
        reasons = _unregistered_reasons(db, scene.names, rec, list(models.values()), opts.min_num_matches)
    db_path.unlink()
    if reasons:
        logger.warning("SfM registered %d of %d images; not registered:", rec.num_reg_images(), len(scene.names))
        for name, why in reasons.items():
            logger.warning("  %s: %s", name, why)
    return SfmResult(rec, groups, reasons)


def _unregistered_reasons(db: pycolmap.Database, names: list[str], rec: pycolmap.Reconstruction,
                          models: list[pycolmap.Reconstruction], min_num_matches: int) -> dict[str, str]:
    """Why each image of ``names`` (database ids 1..N) is not in ``rec``: no pair with enough
    geometrically verified matches, a separate model, or mapping could not register it."""
    registered = {im.name for im in rec.images.values() if im.has_pose}
    missing = [n for n in names if n not in registered]
    if not missing:
        return {}
    pair_ids, inliers = db.read_two_view_geometry_num_inliers()
    best = dict.fromkeys(range(1, len(names) + 1), 0)
    good = dict.fromkeys(range(1, len(names) + 1), 0)
    for pair_id, n in zip(pair_ids, inliers):
        for i in pycolmap.pair_id_to_image_pair(pair_id):
            best[i] = max(best[i], int(n))
            good[i] += int(n) >= min_num_matches
    other = {im.name: len(m.images) for m in models if m is not rec for im in m.images.values() if im.has_pose}
    ids = {n: i for i, n in enumerate(names, 1)}
    out = {}
    for name in missing:
        i = ids[name]
        if good[i] == 0:
            out[name] = (f"no image pair with {min_num_matches} geometrically verified matches (best: {best[i]}): "
                         "too little overlap with the other photos, or too little texture")
        elif name in other:
            out[name] = (f"in a separate model of {other[name]} photos that shares too few verified matches with "
                         f"the largest ({rec.num_reg_images()} photos)")
        else:
            out[name] = (f"incremental mapping could not register it ({good[i]} verified pairs, at most {best[i]} "
                         "verified matches in one): too few of its matches see triangulated points")
    return out


def model_stats(rec: pycolmap.Reconstruction) -> dict:
    """Registered images, 3D points, mean track length, mean reprojection error (px)."""
    return {
        "registered_images": int(rec.num_reg_images()),
        "points3D": int(rec.num_points3D()),
        "mean_track_length": float(rec.compute_mean_track_length()) if rec.num_points3D() else 0.0,
        "mean_reprojection_error": float(rec.compute_mean_reprojection_error()) if rec.num_points3D() else 0.0,
    }
