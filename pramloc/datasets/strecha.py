"""Strecha multi-view benchmark: ``images/NNNN.jpg`` and ``gt_cameras_strecha/NNNN.jpg.camera``."""

from __future__ import annotations

from pathlib import Path

from ..errors import PramlocError
from ..io import read_strecha_camera
from . import ImageRecord, Scene, apply_split, list_images


def load_strecha(root: Path, split: Path | None = None) -> Scene:
    root = Path(root)
    if not (root / "images").is_dir():
        raise PramlocError(f"{root}: not a Strecha folder (no images/)")
    names = apply_split(["images/" + n for n in list_images(root / "images")], split, root)
    images = []
    for name in names:
        cam_file = root / "gt_cameras_strecha" / (Path(name).name + ".camera")
        if cam_file.exists():
            camera, pose = read_strecha_camera(cam_file)
        else:
            camera, pose = None, None
        images.append(ImageRecord(name, camera, pose))
    return Scene(root, images, {"kind": "strecha", "root": str(root), "split": str(split) if split else None})
