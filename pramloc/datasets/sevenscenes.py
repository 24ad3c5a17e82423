"""Microsoft 7-Scenes: ``rgb/frame-XXXXXX.color.jpg``, ``poses/frame-XXXXXX.pose.txt``
(camera-to-world, metres). Colour intrinsics: PINHOLE 525/525/320/240 at 640x480."""

from __future__ import annotations

from pathlib import Path

from ..errors import PramlocError
from ..geometry import Camera
from ..io import read_matrix_pose
from . import ImageRecord, Scene, apply_split, list_images

COLOR_CAMERA = "PINHOLE 640 480 525 525 320 240"


def pose_path(root: Path, name: str) -> Path:
    stem = Path(name).name.replace(".color.jpg", "").replace(".color.png", "")
    return root / "poses" / f"{stem}.pose.txt"


def load_7scenes(root: Path, split: Path | None = None) -> Scene:
    root = Path(root)
    if not (root / "rgb").is_dir():
        raise PramlocError(f"{root}: not a 7-Scenes folder (no rgb/)")
    names = [n for n in list_images(root / "rgb")]
    names = apply_split(["rgb/" + n for n in names], split, root)
    camera = Camera.from_string(COLOR_CAMERA)
    images = []
    for name in names:
        pp = pose_path(root, name)
        pose = read_matrix_pose(pp) if pp.exists() else None
        images.append(ImageRecord(name, camera, pose))
    return Scene(root, images, {"kind": "7scenes", "root": str(root), "split": str(split) if split else None})
