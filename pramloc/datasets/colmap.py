"""Images plus an existing COLMAP model (text or binary) whose poses and intrinsics are trusted."""

from __future__ import annotations

from pathlib import Path

from ..errors import PramlocError
from ..geometry import Camera, Pose
from . import ImageRecord, Scene, apply_split, list_images


def read_colmap_model(model_dir: Path):
    """Read a COLMAP model folder (``.bin`` or ``.txt``) with pycolmap, checking its files."""
    import pycolmap

    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise PramlocError(f"{model_dir}: COLMAP model folder not found")
    for ext in (".bin", ".txt"):
        files = [model_dir / f"{p}{ext}" for p in ("cameras", "images", "points3D")]
        if any(f.exists() for f in files):
            missing = [f.name for f in files if not f.exists()]
            if missing:
                raise PramlocError(f"{model_dir}: COLMAP model is missing {', '.join(missing)}")
            break
    else:
        raise PramlocError(f"{model_dir}: no COLMAP model (cameras/images/points3D .bin or .txt)")
    try:
        rec = pycolmap.Reconstruction(str(model_dir))
    except Exception as err:  # pycolmap raises plain RuntimeError / ValueError on bad files
        msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise PramlocError(f"{model_dir}: cannot read COLMAP model ({msg})") from None
    return rec


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
        camera = Camera.from_pycolmap(rec.cameras[image.camera_id])
        pose = Pose.from_pycolmap(image.cam_from_world()) if image.has_pose else None
        images.append(ImageRecord(image.name, camera, pose))
    if not images:
        raise PramlocError(f"{model_dir}: COLMAP model has no images")
    scene = Scene(image_dir, images, {"kind": "colmap", "root": str(image_dir), "model": str(model_dir),
                                      "split": str(split) if split else None})
    if split is not None:
        scene = scene.subset(apply_split(scene.names, split, image_dir))
    return scene
