"""Strecha multi-view benchmark: ``images/NNNN.jpg`` and ``gt_cameras_strecha/NNNN.jpg.camera``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import PramlocError
from ..geometry import Camera, Pose
from ..io import parse_floats, read_lines
from .base import ImageRecord, Scene, apply_split, list_images, register


def read_strecha_camera(path: Path) -> tuple[Camera, Pose]:
    """Strecha ``.camera``: K (3 rows), distortion, R camera-to-world (3 rows), C, ``W H``."""
    lines = read_lines(path)
    if len(lines) < 9:
        raise PramlocError(f"{path}: Strecha camera file needs 9 lines, found {len(lines)}")
    rows = []
    for lineno, line in lines[:9]:
        rows.append(parse_floats(path, lineno, line.split(), "camera value"))
    lens = [len(r) for r in rows]
    if lens[:3] != [3, 3, 3] or lens[4:8] != [3, 3, 3, 3] or lens[8] != 2:
        raise PramlocError(f"{path}: malformed Strecha camera (row lengths {lens})")
    K = np.array(rows[:3])
    if any(abs(d) > 1e-12 for d in rows[3]):
        raise PramlocError(f"{path}: radial distortion is not supported (images must be undistorted)")
    R_c2w = np.array(rows[4:7])
    C = np.array(rows[7])
    if not all(v == int(v) for v in rows[8]):
        raise PramlocError(f"{path}: image size {rows[8]} is not two integers")
    w, h = int(rows[8][0]), int(rows[8][1])
    with np.errstate(over="ignore", invalid="ignore"):
        if not abs(np.linalg.det(R_c2w) - 1) <= 1e-2:
            raise PramlocError(f"{path}: rotation is not a rotation matrix")
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R_c2w, C
    try:
        return Camera("PINHOLE", w, h, [K[0, 0], K[1, 1], K[0, 2], K[1, 2]]), Pose.from_cam_to_world(T)
    except PramlocError as err:
        raise PramlocError(f"{path}: {err}") from None


@register("strecha", preset="outdoor")
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
