"""Images plus an existing COLMAP model (text or binary) whose poses and intrinsics are
trusted (the model is checked by :func:`pramloc.io.colmap.read_colmap_model`)."""

from __future__ import annotations

from pathlib import Path

from ..errors import PramlocError
from ..geometry import Camera, Pose
from ..io.colmap import read_colmap_model
from .base import ImageRecord, Scene, apply_split, list_images


def load_colmap(image_dir: Path, model_dir: Path, split: Path | None = None) -> Scene:
    image_dir = Path(image_dir)
    on_disk = set(list_images(image_dir))
    rec = read_colmap_model(model_dir)
    images = []
    for image in sorted(rec.images.values(), key=lambda im: im.name):
        if image.name not in on_disk:
            raise PramlocError(f"{model_dir}: model names image {image.name!r} that is not in {image_dir}")
        if image.camera_id not in rec.cameras:
            raise PramlocError(f"{model_dir}: image {image.name!r} refers to missing camera {image.camera_id}")
        try:
            camera = Camera.from_pycolmap(rec.cameras[image.camera_id])
            pose = Pose.from_pycolmap(image.cam_from_world()) if image.has_pose else None
        except PramlocError as err:
            raise PramlocError(f"{model_dir}: image {image.name!r}: {err}") from None
        images.append(ImageRecord(image.name, camera, pose))
    if not images:
        raise PramlocError(f"{model_dir}: COLMAP model has no images")
    scene = Scene(image_dir, images, {"kind": "colmap", "root": str(image_dir), "model": str(model_dir),
                                      "split": str(split) if split else None})
    if split is not None:
        scene = scene.subset(apply_split(scene.names, split, image_dir))
    return scene
