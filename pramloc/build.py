"""``pramloc build-map``: images (+ known poses, or SfM) -> a landmark map folder.

Stages: features -> triangulation (known poses) or SfM -> landmarks -> retrieval index
-> recognizer training -> atomic commit. Intermediate results (features, the full
triangulated model) are cached in a hidden ``.NAME.cache/`` folder beside the map, so a
re-run after an interruption resumes from the last finished stage.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pycolmap

from . import landmarks, logger, mapio, retrieval, sfm
from . import pairs as pairs_mod
from . import features as features_mod
from .config import PipelineConfig
from .datasets import Scene
from .errors import PramlocError
from .features.base import LEGACY_ROOTSIFT, DescriptorSpec
from .geometry import Camera, Pose
from .intrinsics import cameras_by_key
from .mapio import POINTS_ORDER
from .io import read_features
from .timing import peak_memory_mb, timed


def _hash(obj) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:10]


def cache_dir(out: Path) -> Path:
    out = Path(out)
    return out.parent / f".{out.name}.cache"


def _scene_from_sfm(scene: Scene, rec: pycolmap.Reconstruction) -> Scene:
    """Keep the images SfM registered, with the cameras and poses it estimated."""
    from .datasets import ImageRecord

    by_name = {im.name: im for im in rec.images.values() if im.has_pose}
    images = [ImageRecord(n, Camera.from_pycolmap(rec.cameras[by_name[n].camera_id]),
                          Pose.from_pycolmap(by_name[n].cam_from_world()))
              for n in scene.names if n in by_name]
    return Scene(scene.image_dir, images, dict(scene.source))


def assemble(scene: Scene, seg: landmarks.LandmarkSegmentation, feats: list[dict],
             spec: DescriptorSpec = LEGACY_ROOTSIFT) -> mapio.LandmarkMap:
    """Kept points sorted by landmark (within one, by the number of map images observing
    them, most first) + per-image observations (with their pixels) -> LandmarkMap
    (descriptors as the extractor's ``spec`` declares)."""
    kept = seg.tracks.subset(seg.keep)
    lm = seg.landmark[seg.keep]
    # By landmark, and within a landmark the points seen by the most map images first: the
    # recognition path matches the first ones of each landmark it recognizes.
    order = np.lexsort((-kept.track_length, lm))
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
        image_keypoints=kp_xy.astype(np.float32),
        landmark_centers=seg.centers,
        descriptor_spec=spec,
    )
    return m


def main(conf: PipelineConfig, scene: Scene, out: Path, overwrite: bool = False, train: bool = True,
         device: str | None = None, workers: int = 1, ray: bool = False, ray_address: str | None = None) -> dict:
    """Build a map of ``scene`` into ``out``. Returns the manifest (with stats and timings).
    Feature extraction and pair matching run on ``workers`` processes, or with ``ray`` on
    ``workers`` Ray actors (cluster at ``ray_address``, else a local one; :mod:`pramloc.parallel`);
    the map does not depend on them.

    ``scene`` images need cameras and poses (triangulation) or none at all (SfM).
    """
    if ray:
        from .parallel import ray_backend

        with ray_backend(ray_address):
            return main(conf, scene, out, overwrite, train, device, workers)
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

    times: dict[str, float] = {}
    cache = cache_dir(out)
    cache.mkdir(parents=True, exist_ok=True)
    fconf = conf.features.to_dict()
    feat_path = cache / f"features-{conf.features.name}-{_hash(fconf)}.h5"
    with timed(times, "features"):
        features_mod.main(conf.features, scene.image_dir, scene.names, feat_path, workers=workers)

    feats = [read_features(feat_path, n) for n in scene.names]
    items = [retrieval.RetrievalInput(f["descriptors"], f["keypoints"], scene.path(n), n)
             for f, n in zip(feats, scene.names)]  # what the map's retrieval method reads of each image
    index, sfm_record = None, {}
    if use_sfm:  # the map's retrieval, fitted on every photo first, chooses the pairs to match
        with timed(times, "pairs"):
            index, pair_list, sfm_record["pairs"] = pairs_mod.for_sfm(
                scene.names, items, conf.triangulation, conf.retrieval)
        logger.info("Image pairs: %(pairs)d of the %(exhaustive_pairs)d possible (%(method)s).", sfm_record["pairs"])

    sfm_key = _hash([conf.triangulation.to_dict(), fconf, scene.names, use_sfm,
                     conf.retrieval.to_dict() if use_sfm else None,
                     [im.pose.qvec.tolist() + im.pose.tvec.tolist() for im in scene.images] if not use_sfm else None])
    sfm_path = cache / f"sfm-{sfm_key}"
    with timed(times, "sfm" if use_sfm else "triangulation"):
        if (sfm_path / "points3D.bin").exists():
            logger.info("Reusing the cached sparse model %s.", sfm_path)
            rec = pycolmap.Reconstruction(str(sfm_path))
            report = sfm_path / "report.json"
            if report.exists():
                sfm_record.update(json.loads(report.read_text()))
        else:
            work = cache / "work"
            if use_sfm:
                result = sfm.reconstruct(scene, feat_path, work, conf.triangulation, seed=conf.landmarks.seed,
                                         feature_conf=conf.features, workers=workers, pairs=pair_list)
                rec = result.model
                sfm_record.update(result.report())
            else:
                rec = sfm.triangulate(scene, feat_path, work, conf.triangulation, feature_conf=conf.features,
                                      workers=workers)
            tmp = cache / f".tmp-{sfm_key}"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            rec.write(str(tmp))
            if use_sfm:
                (tmp / "report.json").write_text(json.dumps({k: v for k, v in sfm_record.items() if k != "pairs"}))
            shutil.rmtree(sfm_path, ignore_errors=True)
            tmp.rename(sfm_path)
            shutil.rmtree(work, ignore_errors=True)
    if use_sfm:
        rows = {n: i for i, n in enumerate(scene.names)}
        scene = _scene_from_sfm(scene, rec)
        keep = [rows[n] for n in scene.names]
        feats = [feats[i] for i in keep]
        items = [items[i] for i in keep]
        index = index.subset(keep) if index is not None else None
    stats = {"model": sfm.model_stats(rec), **sfm_record,
             "exif_cameras": cameras_by_key([scene.path(n) for n in scene.names], [im.camera for im in scene.images])}
    logger.info("Sparse model: %(registered_images)d images, %(points3D)d points, track length "
                "%(mean_track_length).2f, reprojection error %(mean_reprojection_error).2f px.", stats["model"])
    if stats["model"]["points3D"] < 10:
        raise PramlocError(f"{scene.image_dir}: only {stats['model']['points3D']} 3D points could be "
                           "triangulated (check the poses and that the images overlap)")

    with timed(times, "landmarks"):
        seg = landmarks.build(rec, scene.names, [f["descriptors"] for f in feats], conf.landmarks.to_dict())
        m = assemble(scene, seg, feats, features_mod.descriptor_spec(conf.features.name))
    stats["landmarks"] = seg.stats

    if index is None:
        with timed(times, "retrieval"):  # with the map's observations of each image (landmarks, points)
            index = retrieval.fit(conf.retrieval, retrieval.map_inputs(m, items))
    m.retrieval = index.to_arrays()

    staging = mapio.staging_dir(out)
    try:
        mapio.write_map_data(m, staging)
        extra = {"config": conf.to_dict(), "source": scene.source, "feature": fconf, "points_order": POINTS_ORDER,
                 "descriptor": json.loads(m.descriptor_spec.to_json()),
                 "retrieval": {"method": conf.retrieval.method}, "stats": stats}
        if train:
            with timed(times, "recognizer"):
                from .recognition import supervision
                from .recognition import train as train_mod

                sup = supervision.training_labels(seg.tracks.xyz, seg.landmark, [f["keypoints"] for f in feats],
                                                  [im.camera for im in scene.images], [im.pose for im in scene.images])
                extra["recognizer"] = train_mod.main(
                    conf.recognizer, supervision.training_images(feats, scene.names, sup),
                    m.num_landmarks, staging / mapio.RECOGNIZER, device=device, descriptor_spec=m.descriptor_spec)
        extra.update(timings={k: round(v, 3) for k, v in times.items()}, peak_memory_mb=peak_memory_mb())
        # The map's versions (``update-map`` appends one per update): this build is the first.
        extra["history"] = [{"version": 1, "kind": "build", "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                             "images": len(m.image_names), "points": int(len(m.xyz)),
                             "landmarks": int(m.num_landmarks), "seconds": round(sum(times.values()), 1)}]
        manifest = mapio.write_manifest(staging, m, extra)
        mapio.commit(staging, out, overwrite)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info("Map written to %s (%d points, %d landmarks).", out, len(m.xyz), m.num_landmarks)
    return manifest
