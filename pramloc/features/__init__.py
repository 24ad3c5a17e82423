"""Local feature extraction. A registry maps a name to an extractor module; each module
defines ``default_conf`` and ``extract(image_gray, conf) -> dict`` on a float32 image in
[0, 255] of shape (H, W). Adding an extractor = one small module + one registry line.

Outputs (hloc layout, see :mod:`pramloc.io`): ``keypoints`` (N, 2) in pixels of the
*original* image, ``descriptors`` (N, D) float32, ``scores`` (N,), ``image_size`` (W, H).
"""

from __future__ import annotations

import importlib
from pathlib import Path

import cv2
import numpy as np

from .. import logger
from ..errors import PramlocError
from ..progress import track

REGISTRY = {"sift": "pramloc.features.sift"}


def get_extractor(name: str):
    if name not in REGISTRY:
        raise PramlocError(f"unknown feature extractor {name!r} (known: {', '.join(REGISTRY)})")
    return importlib.import_module(REGISTRY[name])


def read_image(path: Path, grayscale: bool = True) -> np.ndarray:
    """Read an image (EXIF orientation applied). Grayscale (H, W) or RGB (H, W, 3) uint8."""
    path = Path(path)
    if not path.is_file():
        raise PramlocError(f"{path}: image not found")
    if path.stat().st_size == 0:
        raise PramlocError(f"{path}: image file is empty")
    data = np.fromfile(str(path), dtype=np.uint8)  # handles non-ASCII names
    flag = cv2.IMREAD_GRAYSCALE if grayscale else cv2.IMREAD_COLOR
    image = cv2.imdecode(data, flag)
    if image is None or image.size == 0:
        raise PramlocError(f"{path}: cannot decode image (corrupt or unsupported format)")
    if not grayscale:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return image


def resize_max_side(image: np.ndarray, max_side: int | None) -> tuple[np.ndarray, float]:
    """Downscale so that max(H, W) <= max_side (never upscale). Returns image, scale."""
    h, w = image.shape[:2]
    if not max_side or max(h, w) <= max_side:
        return image, 1.0
    scale = max_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), scale


def extract_image(image: np.ndarray, conf: dict) -> dict[str, np.ndarray]:
    """Features of one grayscale image (H, W) uint8, keypoints in its original pixel frame."""
    h, w = image.shape[:2]
    small, scale = resize_max_side(image, conf.get("max_side"))
    sh, sw = small.shape[:2]
    pred = get_extractor(conf["name"]).extract(small.astype(np.float32), conf)
    kp = pred["keypoints"].astype(np.float32)
    if len(kp):
        # hloc convention: pixel centres at integer coordinates in both frames.
        kp = (kp + 0.5) * np.array([w / sw, h / sh], dtype=np.float32) - 0.5
    return {
        "keypoints": kp.reshape(-1, 2),
        "descriptors": pred["descriptors"].astype(np.float32),
        "scores": pred["scores"].astype(np.float32),
        "image_size": np.array([w, h], dtype=np.int32),
    }


def extract_path(path: Path, conf: dict) -> dict[str, np.ndarray]:
    return extract_image(read_image(path, grayscale=True), conf)


def main(conf: dict, image_dir: Path, names: list[str], out_path: Path, overwrite: bool = False) -> Path:
    """Extract features of ``names`` (relative to ``image_dir``) into ``out_path`` (HDF5).

    Images already in the file are skipped unless ``overwrite``. Returns ``out_path``.
    """
    from ..io import list_feature_names, write_features

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    done = set() if overwrite else set(list_feature_names(out_path))
    todo = [n for n in names if n not in done]
    logger.info("Extracting %s features of %d images (%d cached).", conf["name"], len(todo), len(names) - len(todo))
    for name in track(todo, desc="features"):
        feats = extract_path(Path(image_dir) / name, conf)
        write_features(out_path, name, {**feats, "descriptors": feats["descriptors"].T})
    return out_path
