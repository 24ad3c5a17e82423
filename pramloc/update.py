"""``pramloc update-map``: grow a map with new photos, without building it again.

Stages: the new photos' features (the map's own extractor; the map images' come from the
build's cache, else are extracted again) -> poses (given, or registered against the map by
pramloc's localizer, then refined by pycolmap's bundle adjustment with the map's poses held
fixed) -> matching of each new photo with its nearest map images and new photos ->
pycolmap triangulation that keeps the map's points (they gain observations) and adds new
ones -> landmarks (a new point joins the landmark it falls in, new landmarks are made of
the points outside every landmark; existing ids never change) -> the retrieval index
extended -> the recognizer fine-tuned from its weights (new landmarks: new output rows) ->
a new version of the map folder, swapped in atomically (:func:`pramloc.mapio.commit`), its
manifest's ``history`` extended.

A localizer holding the old version keeps it (its files stay open; see
:mod:`pramloc.mapio`); an update killed at any point leaves the old map as it was.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pycolmap

from . import build, landmarks, logger, mapio, sfm
from . import features as features_mod
from . import pairs as pairs_mod
from .config import FeatureConfig, PipelineConfig, RecognizerConfig, UpdateConfig
from .datasets import ImageRecord, Scene
from .errors import PramlocError
from .geometry import Camera, Pose
from .io import read_features
from .timing import peak_memory_mb, timed


@dataclass
class Registration:
    """New photos without poses, registered against the map: ``poses`` (name -> world-to-camera
    :class:`Pose`), ``cameras`` (name -> :class:`Camera` at the image's size), and the photos
    left out with the reason (name -> reason)."""

    poses: dict[str, Pose] = field(default_factory=dict)
    cameras: dict[str, Camera] = field(default_factory=dict)
    unregistered: dict[str, str] = field(default_factory=dict)


def history(manifest: dict) -> list[dict]:
    """The map's versions, oldest first: its manifest's ``history`` (a map built before it was
    recorded: one entry for its build)."""
    if manifest.get("history"):
        return list(manifest["history"])
    return [{"version": 1, "kind": "build", "created": manifest.get("created"),
             "images": manifest.get("counts", {}).get("images")}]


def feature_path(map_path: Path, fconf: FeatureConfig) -> Path:
    """The features file of the map's build cache (``build-map`` writes the same one)."""
    return build.cache_dir(map_path) / f"features-{fconf.name}-{build._hash(fconf.to_dict())}.h5"


def _old_image_dir(m: mapio.LandmarkMap, scene: Scene) -> Path:
    """Where the map's own photos are: beside the new ones, else the root the map was built from."""
    probe = m.image_names[0]
    for d in (scene.image_dir, m.manifest.get("source", {}).get("root"), m.manifest.get("source", {}).get("images")):
        if d is not None and (Path(d) / probe).is_file():
            return Path(d)
    return scene.image_dir


def register(map_path: Path, scene: Scene, names: list[str], min_inliers: int, device: str | None = None
             ) -> Registration:
    """Poses of the photos ``names`` of ``scene`` from pramloc's localizer on the map, with the
    camera of each pose (the scene's, else the map's of the same EXIF camera, else estimated
    from EXIF or guessed, its focal refined); those with fewer than ``min_inliers`` PnP
    inliers, or not localized, are left out."""
    from .localize import Localizer

    loc = Localizer(map_path, mode="auto", device=device)
    out = Registration()
    for name in names:
        r = loc.localize(scene.path(name), camera=scene[name].camera, name=name)
        if r.pose is None:
            out.unregistered[name] = f"not localized against the map: {r.reason}"
        elif r.num_inliers < min_inliers:
            out.unregistered[name] = f"too few PnP inliers against the map ({r.num_inliers} < {min_inliers})"
        else:
            out.poses[name], out.cameras[name] = r.pose, r.camera
    return out


def _add_map_points(rec: pycolmap.Reconstruction, m: mapio.LandmarkMap, keypoints: list[np.ndarray]
                    ) -> dict[tuple[int, int], int]:
    """Add the map's points to ``rec`` (whose image ``i + 1`` is map image ``i`` with all its
    keypoints ``keypoints[i]`` (N_i, 2) as 2D points): each stored observation is the
    keypoint at its pixel. Returns the map point of each observation: (image index,
    keypoint index) -> point index."""
    from scipy.spatial import cKDTree

    tracks: list[list[tuple[int, int]]] = [[] for _ in range(len(m.xyz))]
    for i in range(len(m.image_names)):
        pts = m.image_point_ids(i)
        if not len(pts):
            continue
        xy = np.asarray(m.image_keypoints[m.image_offsets[i]:m.image_offsets[i + 1]], np.float64)
        # The same keypoint (features extracted again are identical); SIFT puts several keypoints
        # (orientations) at one pixel: each observation takes one not taken yet.
        dist, k = cKDTree(np.asarray(keypoints[i], np.float64)).query(xy, k=min(8, len(keypoints[i])))
        dist, k = dist.reshape(len(xy), -1), k.reshape(len(xy), -1)
        used: set[int] = set()
        for p, kk, dd in zip(pts, k, dist):
            free = [int(c) for c, d in zip(kk, dd) if d < 0.01 and int(c) not in used]
            if free:
                used.add(free[0])
                tracks[int(p)].append((i + 1, free[0]))
    owner = {}
    for p, elements in enumerate(tracks):
        track = pycolmap.Track()
        for image_id, idx in elements:
            track.add_element(image_id, idx)
            owner[(image_id - 1, idx)] = p
        rec.add_point3D(np.asarray(m.xyz[p], np.float64), track, np.asarray(m.color[p], np.uint8))
    return owner


def landmark_extents(xyz: np.ndarray, point_landmark: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """(L,) extent of each landmark: the 95th percentile distance of its points (P, 3) to its
    centre (L, 3) (0 for a landmark without points)."""
    d = np.linalg.norm(xyz - centers[point_landmark], axis=1)
    counts = np.bincount(point_landmark, minlength=len(centers))
    groups = np.split(d[np.argsort(point_landmark, kind="stable")], np.cumsum(counts)[:-1])
    return np.array([np.percentile(g, 95) if len(g) else 0.0 for g in groups])


def assign_landmarks(new_xyz: np.ndarray, centers: np.ndarray, extents: np.ndarray, margin: float,
                     points_per_landmark: int, min_points: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Landmarks of new points (N, 3): the nearest landmark (of ``centers`` (L, 3)) when within
    ``margin`` times its extent (``extents`` (L,)); the points outside every landmark make new
    landmarks (spatial k-means, about ``points_per_landmark`` points each, ids L, L + 1, ...)
    when they are at least ``min_points``, else join their nearest landmark. Returns
    (labels (N,), centres of the new landmarks (K, 3))."""
    if not len(new_xyz):
        return np.zeros(0, np.int64), np.zeros((0, 3))
    near = landmarks.nearest_landmark(new_xyz, centers)
    inside = np.linalg.norm(new_xyz - centers[near], axis=1) <= margin * extents[near]
    labels = near.copy()
    out = ~inside
    if out.sum() < max(min_points, 1):
        return labels, np.zeros((0, 3))
    k = max(1, int(round(out.sum() / max(points_per_landmark, 1))))
    sub, new_centers = landmarks.segment(new_xyz[out], k, seed)
    labels[out] = len(centers) + sub
    return labels, new_centers


def _same_map(path: Path, manifest: dict) -> bool:
    try:
        return mapio.read_manifest(path).get("files") == manifest.get("files")
    except PramlocError:
        return False


def main(map_path: Path, scene: Scene, conf: UpdateConfig | dict | None = None, device: str | None = None,
         workers: int = 1, use_poses: bool = True) -> dict:
    """Add the photos of ``scene`` that the map at ``map_path`` lacks (their poses: the
    scene's when every new photo has one and ``use_poses``, else registered against the map)
    and write the grown map in its place. Returns what was done: ``changed`` (False when
    there was nothing new: the map is left untouched), ``images_added``, ``unregistered``
    (name -> reason), ``points_added``, ``landmarks_added``, ``version``, ``timings``, and
    the new ``manifest``."""
    conf = UpdateConfig.of(conf, "update")
    map_path = Path(map_path)
    t0 = time.perf_counter()
    times: dict[str, float] = {}
    m = mapio.load_map(map_path)
    manifest = m.manifest
    known = set(m.image_names)
    new = [im for im in scene.images if im.name not in known]
    result = {"map": str(map_path), "changed": False, "images_added": [], "unregistered": {}, "points_added": 0,
              "landmarks_added": 0, "version": history(manifest)[-1]["version"], "timings": times}
    if not new:
        logger.info("%s: every photo given is in the map already; nothing to do.", map_path)
        return result
    missing = next((im.name for im in new if not scene.path(im.name).is_file()), None)
    if missing is not None:  # before anything is written
        raise PramlocError(f"{scene.path(missing)}: image not found")
    pconf = PipelineConfig.from_dict(manifest.get("config", {}))
    fconf = FeatureConfig.from_dict(manifest["feature"], "features")
    tconf = pconf.triangulation
    cache = build.cache_dir(map_path)
    feat_path = feature_path(map_path, fconf)
    new_names = [im.name for im in new]

    with timed(times, "features"):
        features_mod.main(fconf, scene.image_dir, new_names, feat_path, workers=workers)
        features_mod.main(fconf, _old_image_dir(m, scene), m.image_names, feat_path, workers=workers)

    given = use_poses and all(im.pose is not None and im.camera is not None for im in new)
    if given:
        reg = Registration({im.name: im.pose for im in new}, {im.name: im.camera for im in new})
    else:
        with timed(times, "registration"):
            reg = register(map_path, scene, new_names, conf.min_inliers, device)
        for name, why in reg.unregistered.items():
            logger.warning("Not added: %s: %s", name, why)
        new_names = [n for n in new_names if n in reg.poses]
        result["unregistered"] = dict(reg.unregistered)
        if not new_names:
            raise PramlocError(f"{scene.image_dir}: none of the {len(new)} new photo(s) could be registered "
                               f"against the map (e.g. {next(iter(reg.unregistered.items()))[1]})")

    names = list(m.image_names) + new_names
    cameras = list(m.cameras) + [reg.cameras[n] for n in new_names]
    poses = list(m.poses) + [reg.poses[n] for n in new_names]
    grown = Scene(scene.image_dir, [ImageRecord(n, c, p) for n, c, p in zip(names, cameras, poses)],
                  dict(manifest.get("source", {})))
    feats = [read_features(feat_path, n) for n in names]

    with timed(times, "matching"):
        pairs = pairs_mod.from_poses(names, np.stack([p.center for p in poses]), np.stack([p.R[2] for p in poses]),
                                     conf.num_pairs, tconf.max_pair_distance, tconf.min_overlap_angle,
                                     sources=range(len(m.image_names), len(names)))
        logger.info("Matching %d image pairs of the %d new photo(s).", len(pairs), len(new_names))
        matches = sfm._match_pairs(grown, feat_path, pairs, tconf.ratio, known_poses=True,
                                   max_epipolar_error=tconf.max_epipolar_error,
                                   matcher=sfm.pair_matcher(tconf, fconf, len(pairs), sfm=False), feature_conf=fconf,
                                   workers=workers)
    with timed(times, "triangulation"):
        rec = sfm.known_pose_model(names, cameras, poses, [f["keypoints"] for f in feats])
        owner = _add_map_points(rec, m, [f["keypoints"] for f in feats])
        work = cache / f"update-work-{mapio.folder._staging_tag()}"
        shutil.rmtree(work, ignore_errors=True)
        logger.info("Triangulating the new photos' matches, the map's poses and points kept (pycolmap).")
        rec = sfm.triangulate_matches(rec, grown, feat_path, matches, work, tconf, clear_points=False)
        if not given:
            rec = _adjust_new_poses(rec, len(m.image_names), tconf)
            poses = [Pose.from_pycolmap(rec.images[i + 1].cam_from_world()) for i in range(len(names))]
            grown = Scene(grown.image_dir, [ImageRecord(n, c, p) for n, c, p in zip(names, cameras, poses)],
                          grown.source)
        shutil.rmtree(work, ignore_errors=True)

    with timed(times, "landmarks"):
        seg, lstats = _grown_landmarks(m, rec, names, feats, owner, conf, pconf)
        grown_map = build.assemble(grown, seg, feats, m.descriptor_spec)
    with timed(times, "retrieval"):
        index = mapio.retrieval_index(m).extend([feats[i]["descriptors"] for i in range(len(m.image_names), len(names))])
        grown_map.retrieval = index.to_arrays()

    hist = history(manifest)
    entry = {"version": hist[-1]["version"] + 1, "kind": "update", "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
             "images_added": len(new_names), "images": len(names), "points": int(len(grown_map.xyz)),
             "landmarks": grown_map.num_landmarks, "points_added": lstats["new_points"],
             "landmarks_added": lstats["new_landmarks"], "poses": "given" if given else "registered",
             "unregistered": [{"name": n, "reason": r} for n, r in reg.unregistered.items()],
             "source": dict(scene.source) or {"images": str(scene.image_dir)}}
    staging = mapio.staging_dir(map_path)
    try:
        mapio.write_map_data(grown_map, staging)
        keep = ("config", "source", "feature", "points_order", "descriptor", "retrieval")
        extra = {k: manifest[k] for k in keep if k in manifest}
        extra["points_order"] = mapio.POINTS_ORDER
        stats = dict(manifest.get("stats", {}))
        stats.update(model=sfm.model_stats(rec), landmarks={**stats.get("landmarks", {}), **lstats})
        extra["stats"] = stats
        if m.recognizer_path is not None and conf.finetune:
            with timed(times, "recognizer"):
                extra["recognizer"] = _finetune(m, grown_map, grown, feats, set(new_names), conf, pconf,
                                                staging / mapio.RECOGNIZER, device)
        elif m.recognizer_path is not None:
            logger.warning("update.finetune is off: the grown map has no recognizer (retrieval only).")
        times["total"] = time.perf_counter() - t0
        entry["seconds"] = round(times["total"], 1)
        extra.update(history=hist + [entry], timings={k: round(v, 3) for k, v in times.items()},
                     peak_memory_mb=peak_memory_mb())
        new_manifest = mapio.write_manifest(staging, grown_map, extra)
        if not _same_map(map_path, manifest):
            raise PramlocError(f"{map_path}: the map changed while it was being updated; update it again")
        mapio.commit(staging, map_path, overwrite=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info("Map %s updated to version %d: %d photo(s) added, %d new points, %d new landmarks (%.0f s).",
                map_path, entry["version"], len(new_names), lstats["new_points"], lstats["new_landmarks"],
                times["total"])
    result.update(changed=True, images_added=new_names, points_added=lstats["new_points"],
                  landmarks_added=lstats["new_landmarks"], version=entry["version"], manifest=new_manifest)
    return result


def _adjust_new_poses(rec: pycolmap.Reconstruction, num_old: int, tconf) -> pycolmap.Reconstruction:
    """pycolmap bundle adjustment of the registered photos' poses and of the points, the map's
    images (ids 1..num_old) held fixed, intrinsics fixed."""
    config = pycolmap.BundleAdjustmentConfig()
    for image_id, image in rec.images.items():
        config.add_image(image_id)
        if image_id <= num_old:
            config.set_constant_rig_from_world_pose(image.frame_id)
    for camera_id in rec.cameras:
        config.set_constant_cam_intrinsics(camera_id)
    options = pycolmap.BundleAdjustmentOptions()
    options.refine_focal_length = options.refine_principal_point = options.refine_extra_params = False
    pycolmap.create_default_bundle_adjuster(options, config, rec).solve()
    pycolmap.ObservationManager(rec).filter_all_points3D(tconf.max_reproj_error, tconf.min_tri_angle)
    return rec


def _map_point_of(tracks: landmarks.Tracks, owner: dict[tuple[int, int], int]) -> np.ndarray:
    """(P,) the map point each point of the grown model continues (-1: a new point): the one
    that held most of its observations (``owner``: (image index, keypoint index) -> map
    point, before triangulation). Triangulation merges some map points with each other or
    with new ones; each map point is continued by one point at most (the one with most of
    its observations)."""
    votes: dict[tuple[int, int], int] = {}
    for p, i, k in zip(tracks.obs_point.tolist(), tracks.obs_image.tolist(), tracks.obs_kp.tolist()):
        o = owner.get((i, k))
        if o is not None:
            votes[(p, o)] = votes.get((p, o), 0) + 1
    out = np.full(len(tracks.xyz), -1, np.int64)
    taken: set[int] = set()
    for (p, o), _ in sorted(votes.items(), key=lambda kv: -kv[1]):
        if out[p] < 0 and o not in taken:
            out[p] = o
            taken.add(o)
    return out


def _grown_landmarks(m: mapio.LandmarkMap, rec: pycolmap.Reconstruction, names: list[str], feats: list[dict],
                     owner: dict[tuple[int, int], int], conf: UpdateConfig, pconf: PipelineConfig
                     ) -> tuple[landmarks.LandmarkSegmentation, dict]:
    """The grown model's points as a :class:`~pramloc.landmarks.LandmarkSegmentation`: the
    map's points keep their landmark and descriptor; new points (seen by at least
    ``min_track_length`` images, statistical outliers out) join a landmark or make new ones
    (:func:`assign_landmarks`) and take their medoid descriptor."""
    lconf = pconf.landmarks
    tracks = landmarks.tracks_from_reconstruction(rec, names)  # sorted by point3D id
    old_index = _map_point_of(tracks, owner)
    is_old = old_index >= 0
    inl = landmarks.remove_outliers(tracks.xyz, lconf.outlier_neighbors, lconf.outlier_std_ratio)
    keep = is_old | ((tracks.track_length >= lconf.min_track_length) & inl)
    tracks, old_index, is_old = tracks.subset(keep), old_index[keep], is_old[keep]
    centers = np.asarray(m.landmark_centers, np.float64)
    old_lm = np.asarray(m.point_landmark, np.int64)
    per = np.bincount(old_lm, minlength=len(centers))
    new_xyz = tracks.xyz[~is_old]
    size = conf.new_landmark_points or (int(np.median(per[per > 0])) if per.any() else lconf.min_points_per_landmark)
    labels, new_centers = assign_landmarks(
        new_xyz, centers, landmark_extents(np.asarray(m.xyz, np.float64), old_lm, centers), conf.landmark_margin,
        size, lconf.min_points_per_landmark, conf.seed)
    lm = np.zeros(len(tracks.xyz), np.int64)
    lm[is_old] = old_lm[old_index[is_old]]
    lm[~is_old] = labels
    desc = np.zeros((len(tracks.xyz), m.descriptors.shape[1]), np.float32)
    desc[is_old] = np.asarray(m.descriptors)[old_index[is_old]]
    if (~is_old).any():
        desc[~is_old] = landmarks.representative_descriptors(tracks.subset(~is_old), [f["descriptors"] for f in feats])
    all_centers = np.concatenate([centers, new_centers]) if len(new_centers) else centers
    stats = {"old_points": int(is_old.sum()), "old_points_lost": int(len(m.xyz) - is_old.sum()),
             "new_points": int((~is_old).sum()), "new_points_in_landmarks": int((labels < len(centers)).sum()),
             "new_landmarks": int(len(new_centers)), "landmarks": int(len(all_centers)),
             "kept_points": int(len(tracks.xyz))}
    logger.info("Landmarks: %d map points kept, %d new points (%d in existing landmarks), %d new landmarks.",
                stats["old_points"], stats["new_points"], stats["new_points_in_landmarks"], stats["new_landmarks"])
    seg = landmarks.LandmarkSegmentation(tracks, lm, all_centers, np.ones(len(tracks.xyz), bool), desc, stats)
    return seg, stats


def _finetune(m: mapio.LandmarkMap, grown_map: mapio.LandmarkMap, grown: Scene, feats: list[dict], new: set[str],
              conf: UpdateConfig, pconf: PipelineConfig, out_path: Path, device: str | None) -> dict:
    """Fine-tune the map's recognizer on the grown map's photos (labels from its points)."""
    from .recognition import supervision
    from .recognition import train as train_mod

    sup = supervision.training_labels(np.asarray(grown_map.xyz, np.float64), grown_map.point_landmark,
                                      [f["keypoints"] for f in feats], [im.camera for im in grown.images],
                                      [im.pose for im in grown.images])
    images = supervision.training_images(feats, grown.names, sup)
    steps = max(conf.min_steps, int(round(conf.steps_per_new_image * len(new))))
    if conf.max_steps is not None:
        steps = min(steps, conf.max_steps)
    rconf = RecognizerConfig.from_dict({**pconf.recognizer.to_dict(), "lr": conf.lr, "warmup_steps": conf.warmup_steps,
                                        "patience": conf.patience, "seed": conf.seed}, "recognizer")
    return train_mod.finetune(rconf, images, grown_map.num_landmarks, mapio.read_part(m, mapio.RECOGNIZER), out_path,
                              new, steps, conf.new_share, device, m.descriptor_spec,
                              checkpoint_name=str(m.path / mapio.RECOGNIZER))
