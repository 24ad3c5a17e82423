"""``pramloc build-map``: images (+ known poses, or SfM) -> a landmark map folder.

Stages: features -> triangulation (known poses) or SfM -> landmarks -> retrieval index
-> recognizer training -> atomic commit. Intermediate results (features, the full
triangulated model) are cached in a hidden ``.NAME.cache/`` folder beside the map, so a
re-run after an interruption resumes from the last finished stage.
"""

from __future__ import annotations

import hashlib
import json
import resource
import shutil
import time
from pathlib import Path

import numpy as np
import pycolmap

from . import landmarks, logger, mapio, sfm
from . import features as features_mod
from .datasets import Scene
from .errors import PramlocError
from .geometry import Camera, Pose
from .io import read_features


def _hash(obj) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:10]


def cache_dir(out: Path) -> Path:
    out = Path(out)
    return out.parent / f".{out.name}.cache"


class StageTimer:
    """Wall time per stage and the process's peak resident memory (``ru_maxrss``)."""

    def __init__(self):
        self.times: dict[str, float] = {}

    def __call__(self, name: str):
        self._name = name
        return self

    def __enter__(self):
        self._t = time.perf_counter()

    def __exit__(self, *exc):
        self.times[self._name] = round(time.perf_counter() - self._t, 3)

    @property
    def peak_mb(self) -> float:
        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _scene_from_sfm(scene: Scene, rec: pycolmap.Reconstruction) -> Scene:
    """Keep the images SfM registered, with the cameras and poses it estimated."""
    from .datasets import ImageRecord

    by_name = {im.name: im for im in rec.images.values() if im.has_pose}
    images = [ImageRecord(n, Camera.from_pycolmap(rec.cameras[by_name[n].camera_id]),
                          Pose.from_pycolmap(by_name[n].cam_from_world()))
              for n in scene.names if n in by_name]
    return Scene(scene.image_dir, images, dict(scene.source))


def _sparse_model(scene: Scene, m: mapio.LandmarkMap, kp_of_obs: np.ndarray) -> pycolmap.Reconstruction:
    """A COLMAP model of the kept points: cameras, posed images whose 2D points are the
    kept observations, and 3D points with their tracks."""
    rec = pycolmap.Reconstruction()
    cam_ids: dict[str, int] = {}
    for i, (name, cam, pose) in enumerate(zip(m.image_names, m.cameras, m.poses), 1):
        key = cam.to_string()
        if key not in cam_ids:
            c = cam.to_pycolmap()
            c.camera_id = cam_ids[key] = len(cam_ids) + 1
            rec.add_camera_with_trivial_rig(c)
        s, e = m.image_offsets[i - 1], m.image_offsets[i]
        image = pycolmap.Image(name=name, keypoints=kp_of_obs[s:e].astype(np.float64) + 0.5,
                               camera_id=cam_ids[key], image_id=i)
        rec.add_image_with_trivial_frame(image, pose.to_pycolmap())
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


def assemble(scene: Scene, seg: landmarks.LandmarkSegmentation, feats: list[dict]) -> tuple[mapio.LandmarkMap, np.ndarray]:
    """Kept points sorted by landmark + per-image observations -> LandmarkMap.
    Also returns the keypoint (N_obs, 2) of each stored observation (for the sparse model)."""
    kept = seg.tracks.subset(seg.keep)
    lm = seg.landmark[seg.keep]
    order = np.argsort(lm, kind="stable")
    new_id = np.empty(len(order), np.int64)
    new_id[order] = np.arange(len(order))
    obs_pt = new_id[kept.obs_point]
    o = np.lexsort((obs_pt, kept.obs_image))
    obs_img, obs_pt, obs_kp = kept.obs_image[o], obs_pt[o], kept.obs_kp[o]
    offsets = np.searchsorted(obs_img, np.arange(len(scene.names) + 1))
    kp_xy = np.stack([feats[i]["keypoints"][k] for i, k in zip(obs_img, obs_kp)]) if len(o) else np.zeros((0, 2))
    m = mapio.LandmarkMap(
        xyz=kept.xyz[order].astype(np.float32),
        descriptors=seg.descriptors[order],
        point_landmark=lm[order],
        color=kept.color[order],
        image_names=scene.names,
        cameras=[im.camera for im in scene.images],
        poses=[im.pose for im in scene.images],
        image_offsets=offsets,
        image_points=obs_pt,
        landmark_centers=seg.centers,
    )
    return m, kp_xy


def training_images(feats: list[dict], names: list[str], sup: "landmarks.TrainingLabels"):
    """Recognizer training data: every keypoint of every map image with its label, and the
    map points visible in the image."""
    from .recognition.data import TrainingImage

    return [TrainingImage(name=n, keypoints=f["keypoints"], descriptors=f["descriptors"], labels=lab,
                          image_size=(int(f["image_size"][0]), int(f["image_size"][1])),
                          points_xy=pxy, points_landmark=plm)
            for n, f, lab, pxy, plm in zip(names, feats, sup.labels, sup.points_xy, sup.points_landmark)]


def main(conf: dict, scene: Scene, out: Path, overwrite: bool = False, train: bool = True,
         device: str | None = None) -> dict:
    """Build a map of ``scene`` into ``out``. Returns the manifest (with stats and timings).

    ``scene`` images need cameras and poses (triangulation) or none at all (SfM).
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise PramlocError(f"{out}: output exists (use --overwrite to replace it)")
    known = [im.pose is not None and im.camera is not None for im in scene.images]
    if any(known) and not all(known):
        missing = scene.images[known.index(False)].name
        raise PramlocError(f"{scene.image_dir / missing}: no pose or camera for this image")
    if len(scene.images) < 2:
        raise PramlocError(f"{scene.image_dir}: need at least 2 map images, got {len(scene.images)}")
    use_sfm = not all(known)

    timer = StageTimer()
    cache = cache_dir(out)
    cache.mkdir(parents=True, exist_ok=True)
    fconf = conf["features"]
    feat_path = cache / f"features-{fconf['name']}-{_hash(fconf)}.h5"
    with timer("features"):
        features_mod.main(fconf, scene.image_dir, scene.names, feat_path)

    sfm_key = _hash([conf["triangulation"], fconf, scene.names, use_sfm,
                     [im.pose.qvec.tolist() + im.pose.tvec.tolist() for im in scene.images] if not use_sfm else None])
    sfm_path = cache / f"sfm-{sfm_key}"
    with timer("sfm" if use_sfm else "triangulation"):
        if (sfm_path / "points3D.bin").exists():
            logger.info("Reusing the cached sparse model %s.", sfm_path)
            rec = pycolmap.Reconstruction(str(sfm_path))
        else:
            work = cache / "work"
            if use_sfm:
                rec = sfm.reconstruct(scene, feat_path, work, {**conf["triangulation"], "seed": conf["landmarks"].get("seed", 0)})
            else:
                rec = sfm.triangulate(scene, feat_path, work, conf["triangulation"])
            tmp = cache / f".tmp-{sfm_key}"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            rec.write(str(tmp))
            shutil.rmtree(sfm_path, ignore_errors=True)
            tmp.rename(sfm_path)
            shutil.rmtree(work, ignore_errors=True)
    if use_sfm:
        scene = _scene_from_sfm(scene, rec)
    stats = {"model": sfm.model_stats(rec)}
    logger.info("Sparse model: %(registered_images)d images, %(points3D)d points, track length "
                "%(mean_track_length).2f, reprojection error %(mean_reprojection_error).2f px.", stats["model"])
    if stats["model"]["points3D"] < 10:
        raise PramlocError(f"{scene.image_dir}: only {stats['model']['points3D']} 3D points could be "
                           "triangulated (check the poses and that the images overlap)")

    feats = [read_features(feat_path, n) for n in scene.names]
    with timer("landmarks"):
        seg = landmarks.build(rec, scene.names, [f["descriptors"] for f in feats], conf["landmarks"])
        m, kp_xy = assemble(scene, seg, feats)
    stats["landmarks"] = seg.stats

    with timer("retrieval"):
        from .retrieval import VladIndex, build_vocabulary

        descs = [f["descriptors"] for f in feats]
        vocab = build_vocabulary(np.concatenate(descs), conf["retrieval"]["num_words"],
                                 seed=conf["retrieval"].get("seed", 0))
        index = VladIndex.build(vocab, descs, scene.names, storage=conf["retrieval"].get("storage", "int8"))
        m.retrieval = {k: v for k, v in index.to_arrays().items() if k != "names"}

    staging = mapio.staging_dir(out)
    try:
        mapio.write_map_data(m, staging)
        (staging / mapio.SFM_DIR).mkdir()
        _sparse_model(scene, m, kp_xy).write(str(staging / mapio.SFM_DIR))
        extra = {"config": conf, "source": scene.source, "feature": fconf, "stats": stats}
        if train:
            with timer("recognizer"):
                from .recognition import train as train_mod

                sup = landmarks.training_labels(seg.tracks.xyz, seg.landmark, [f["keypoints"] for f in feats],
                                                [im.camera for im in scene.images], [im.pose for im in scene.images])
                extra["recognizer"] = train_mod.main(
                    conf["recognizer"], training_images(feats, scene.names, sup),
                    m.num_landmarks, staging / mapio.RECOGNIZER, device=device)
        extra.update(timings=timer.times, peak_memory_mb=timer.peak_mb)
        manifest = mapio.write_manifest(staging, m, extra)
        mapio.commit(staging, out, overwrite)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info("Map written to %s (%d points, %d landmarks).", out, len(m.xyz), m.num_landmarks)
    return manifest
