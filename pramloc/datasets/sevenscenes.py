"""Microsoft 7-Scenes: ``rgb/frame-XXXXXX.color.jpg``, ``poses/frame-XXXXXX.pose.txt``
(camera-to-world, metres). Colour intrinsics: PINHOLE 525/525/320/240 at 640x480."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import PramlocError
from ..geometry import Camera, Pose
from ..io import parse_floats, read_lines
from .base import ImageRecord, Scene, apply_split, list_images, register

COLOR_CAMERA = "PINHOLE 640 480 525 525 320 240"


def pose_path(root: Path, name: str) -> Path:
    stem = Path(name).name.replace(".color.jpg", "").replace(".color.png", "")
    return root / "poses" / f"{stem}.pose.txt"


def read_matrix_pose(path: Path) -> Pose:
    """A 4x4 camera-to-world matrix in a text file (7-Scenes ``poses/*.pose.txt``)."""
    rows = [parse_floats(path, n, line.split(), "pose") for n, line in read_lines(path)]
    if len(rows) not in (3, 4) or any(len(r) != 4 for r in rows):
        raise PramlocError(f"{path}: expected a 4x4 matrix")
    if len(rows) == 4 and not np.allclose(rows[3], [0, 0, 0, 1], atol=1e-6):
        raise PramlocError(f"{path}: the last row of a 4x4 pose must be '0 0 0 1'")
    try:
        return Pose.from_cam_to_world(np.array(rows[:3]))
    except PramlocError as err:
        raise PramlocError(f"{path}: {err}") from None


@register("7scenes", preset="indoor")
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
