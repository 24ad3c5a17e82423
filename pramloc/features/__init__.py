"""Local feature extraction. Each module of this package registers one extractor:

    SPEC = DescriptorSpec(dim=64, signed=True, norm="l2", storage="int8", scale=254)

    @register("name", SPEC)
    def extract(image: np.ndarray, conf: FeatureConfig) -> Features: ...

``extract`` takes a float32 grayscale image (H, W) in [0, 255], ``conf`` a
:class:`~pramloc.config.FeatureConfig` (the only copy of the defaults), and returns a
:class:`~.base.Features` (keypoints (N, 2), scores (N,), descriptors (N, D) as ``SPEC``
declares). The registry finds the modules itself: adding an extractor is one module plus
its test (see docs/ARCHITECTURE.md). Storage, augmentation and matching read ``SPEC``.

:func:`extract_image` checks the result against the declaration and returns the hloc
layout (see :mod:`pramloc.io`): ``keypoints`` (N, 2) in pixels of the *original* image,
``descriptors`` (N, D) float32, ``scores`` (N,), ``image_size`` (W, H).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from .. import logger
from ..config import FeatureConfig
from ..errors import PramlocError
from ..progress import track
from ..registry import Registry
from .base import LEGACY_ROOTSIFT, DescriptorSpec, Features


@dataclass(frozen=True)
class Extractor:
    """A registered extractor: its name, descriptor declaration and extraction function,
    and the ratio test that suits its descriptors in nearest-neighbour matching (2D-3D at
    query time; None: mutual nearest neighbours only)."""

    name: str
    spec: DescriptorSpec
    extract: Callable[[np.ndarray, FeatureConfig], Features]
    ratio: float | None = 0.9


EXTRACTORS: Registry[Extractor] = Registry("pramloc.features", "feature extractor")


def register(name: str, spec: DescriptorSpec, ratio: float | None = 0.9):
    """Decorator of a module's ``extract(image, conf) -> Features``: make it available as
    ``name`` (``ratio``: see :class:`Extractor`)."""

    def deco(fn: Callable[[np.ndarray, FeatureConfig], Features]):
        EXTRACTORS.add(name, Extractor(name, spec, fn, ratio))
        return fn

    return deco


def get_extractor(name: str) -> Extractor:
    """The extractor registered as ``name`` (a :class:`PramlocError` lists the known ones)."""
    return EXTRACTORS.get(name)


def names() -> list[str]:
    """Names of the registered extractors (the choices of ``build-map --features``)."""
    return EXTRACTORS.names()


def descriptor_spec(name: str | None) -> DescriptorSpec:
    """The declaration of extractor ``name`` (``None``: RootSIFT of maps that predate it)."""
    return LEGACY_ROOTSIFT if name is None else get_extractor(name).spec


def _read_bytes(path: Path) -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        raise PramlocError(f"{path}: image not found")
    try:
        data = np.fromfile(str(path), dtype=np.uint8)  # handles non-ASCII and non-UTF-8 names
    except OSError as err:
        raise PramlocError(f"{path}: cannot read image ({err.strerror or err})") from None
    if data.size == 0:
        raise PramlocError(f"{path}: image file is empty")
    return data


def _decode(path: Path, data: np.ndarray, flag: int) -> np.ndarray:
    try:
        image = cv2.imdecode(data, flag)
    except cv2.error:
        image = None
    if image is None or image.size == 0:
        raise PramlocError(f"{path}: cannot decode image (corrupt, truncated or unsupported format)")
    return image


def read_image(path: Path, grayscale: bool = True) -> np.ndarray:
    """Read an image at full resolution, EXIF orientation applied (the image as displayed).
    Grayscale (H, W) or RGB (H, W, 3) uint8, whatever the file's depth and channels
    (16-bit, gray, RGBA). A truncated or corrupt file raises :class:`PramlocError`."""
    data = _read_bytes(path)
    image = _decode(path, data, cv2.IMREAD_GRAYSCALE if grayscale else cv2.IMREAD_COLOR)
    if not grayscale:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return image


MIN_IMAGES_PER_WORKER = 16  # fewer images per worker: extracted in this process (see parallel.map_ordered)
_REDUCED = {2: cv2.IMREAD_REDUCED_GRAYSCALE_2, 4: cv2.IMREAD_REDUCED_GRAYSCALE_4, 8: cv2.IMREAD_REDUCED_GRAYSCALE_8}


def _jpeg_size(data: np.ndarray) -> tuple[int, int] | None:
    """(W, H) as stored in a JPEG's frame header (before EXIF rotation), else None."""
    buf = data[: 1 << 20].tobytes()  # the frame header follows the APP segments (EXIF, ICC, ...)
    if buf[:2] != b"\xff\xd8":
        return None
    i = 2
    while i + 9 < len(buf):
        if buf[i] != 0xFF:
            return None
        marker = buf[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # no length field
            i += 2
            continue
        length = int.from_bytes(buf[i + 2:i + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # SOFn
            h, w = int.from_bytes(buf[i + 5:i + 7], "big"), int.from_bytes(buf[i + 7:i + 9], "big")
            return (w, h) if w > 0 and h > 0 else None
        i += 2 + length
    return None


def decode_factor(size: tuple[int, int] | None, max_side: int | None) -> int:
    """The power of two (1, 2, 4 or 8) by which a JPEG of stored ``size`` (W, H) is decoded
    (libjpeg's DCT scaling: fast, and the full image is never in memory). The reduced image
    keeps at least twice ``max_side`` pixels so that the final resize still averages
    (normal photos are unaffected), and both sides must be multiples of the factor so that
    pixel ``i`` of the reduced image covers original pixels ``[f * i, f * (i + 1))`` exactly,
    whatever the EXIF rotation."""
    if size is None or not max_side:
        return 1
    w, h = size
    for f in (8, 4, 2):
        if w % f == 0 and h % f == 0 and max(w, h) // f >= 2 * max_side:
            return f
    return 1


def load_image(path: Path, max_side: int | None = None) -> tuple[np.ndarray, tuple[int, int]]:
    """A grayscale image for feature extraction and the (W, H) of the full image as
    displayed (EXIF orientation applied). A JPEG much larger than ``max_side`` is decoded
    directly at 1/2, 1/4 or 1/8 of its size (see :func:`decode_factor`): a 12000x9000
    photo never takes 108 MB of memory. Returns the (h, w) uint8 image and (W, H)."""
    data = _read_bytes(path)
    f = decode_factor(_jpeg_size(data), max_side)
    image = _decode(path, data, _REDUCED[f] if f > 1 else cv2.IMREAD_GRAYSCALE)
    return image, (image.shape[1] * f, image.shape[0] * f)


def resize_max_side(image: np.ndarray, max_side: int | None) -> tuple[np.ndarray, float]:
    """Downscale so that max(H, W) <= max_side (never upscale). Returns image, scale."""
    h, w = image.shape[:2]
    if not max_side or max(h, w) <= max_side:
        return image, 1.0
    scale = max_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), scale


def extract_image(image: np.ndarray, conf: FeatureConfig | dict, image_size: tuple[int, int] | None = None) -> dict[str, np.ndarray]:
    """Features of one grayscale image (H, W) uint8 (RGB (H, W, 3) is converted).

    ``image_size`` (W, H): the size of the original image when ``image`` is a reduced
    decoding of it (see :func:`load_image`); keypoints and ``image_size`` are always in the
    original pixel frame. ``conf``: typed, or a dict of overrides (e.g. a map manifest's).
    """
    conf = FeatureConfig.of(conf, "features")
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] in (3, 4):
        image = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY if image.shape[2] == 3 else cv2.COLOR_RGBA2GRAY)
    if image.ndim != 2 or image.size == 0:
        raise PramlocError(f"expected a grayscale image (H, W), got an array of shape {image.shape}")
    if image.dtype != np.uint8:
        raise PramlocError(f"expected a uint8 image, got {image.dtype}")
    h, w = image.shape[:2]
    W, H = (w, h) if image_size is None else (int(image_size[0]), int(image_size[1]))
    # A reduced decoding keeps more than max_side pixels: the final size is the same as
    # resizing the full image.
    small, _ = resize_max_side(image, conf.max_side)
    sh, sw = small.shape[:2]
    extractor = get_extractor(conf.name)
    pred = extractor.extract(small.astype(np.float32), conf)
    if not isinstance(pred, Features):
        raise PramlocError(f"extractor {conf.name!r} returned {type(pred).__name__}, expected Features")
    extractor.spec.check(pred.descriptors, what=f"extractor {conf.name!r}")
    kp = pred.keypoints
    if len(kp):
        # hloc convention: pixel centres at integer coordinates in both frames.
        kp = (kp + 0.5) * np.array([W / sw, H / sh], dtype=np.float32) - 0.5
    return {
        "keypoints": kp.reshape(-1, 2),
        "descriptors": pred.descriptors,
        "scores": pred.scores,
        "image_size": np.array([W, H], dtype=np.int32),
    }


def extract_path(path: Path, conf: FeatureConfig | dict) -> dict[str, np.ndarray]:
    """Features of an image file (JPEGs much larger than ``conf.max_side`` are decoded
    at a reduced size, see :func:`load_image`)."""
    conf = FeatureConfig.of(conf, "features")
    image, size = load_image(path, conf.max_side)
    return extract_image(image, conf, size)


def _extract_named(image_dir: Path, conf: FeatureConfig, state, name: str) -> dict[str, np.ndarray]:
    """Features of one image of :func:`main` (on a worker, :mod:`pramloc.parallel`)."""
    return extract_path(Path(image_dir) / name, conf)


def main(conf: FeatureConfig, image_dir: Path, names: list[str], out_path: Path, overwrite: bool = False,
         workers: int = 1) -> Path:
    """Extract features of ``names`` (relative to ``image_dir``) into ``out_path`` (HDF5),
    on ``workers`` processes (written here, in order).

    Images already in the file are skipped unless ``overwrite``. Returns ``out_path``.
    """
    import functools

    from ..parallel import map_ordered

    from ..io import list_feature_names, write_features

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        done = set() if overwrite else set(list_feature_names(out_path))
    except PramlocError as err:  # e.g. a build killed while writing it
        logger.warning("%s; extracting all features again.", err)
        out_path.unlink()
        done = set()
    todo = [n for n in names if n not in done]
    logger.info("Extracting %s features of %d images (%d cached).", conf.name, len(todo), len(names) - len(todo))
    extracted = map_ordered(dict, functools.partial(_extract_named, Path(image_dir), conf), todo, workers=workers,
                            min_items_per_worker=MIN_IMAGES_PER_WORKER)
    for name, feats in track(zip(todo, extracted), desc="features", total=len(todo)):
        write_features(out_path, name, {**feats, "descriptors": feats["descriptors"].T})
    return out_path
