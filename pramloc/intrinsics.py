"""Intrinsics of a photo given without them: read from its EXIF, otherwise a stated guess.

The camera is ``SIMPLE_PINHOLE f cx cy`` at the image's size as displayed (EXIF
orientation applied, as OpenCV decodes it), principal point at the image centre (COLMAP
convention: origin at the image corner). Its focal length is an estimate: the localizer
refines it in PnP (:func:`pramloc.registration.estimate_pose` with ``refine_focal``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import PramlocError
from .geometry import Camera

GUESS_FOCAL_FACTOR = 1.2  # f = 1.2 * max(W, H): a ~45 degree field of view, typical of phones
FILM_35MM_WIDTH_MM = 36.0  # focal in 35 mm equivalent -> pixels: f35 / 36 * max(W, H)
# EXIF FocalPlaneResolutionUnit -> millimetres per unit (2: inch, 3: cm, 4: mm, 5: um).
_UNIT_MM = {2: 25.4, 3: 10.0, 4: 1.0, 5: 1e-3}
_EXIF_IFD = 0x8769
_ORIENTATION, _FOCAL, _FOCAL_35MM = 0x0112, 0x920A, 0xA405
_MAKE, _MODEL = 0x010F, 0x0110
_PLANE_X_RES, _PLANE_UNIT = 0xA20E, 0xA210
_EXIF_WIDTH, _EXIF_HEIGHT = 0xA002, 0xA003

SOURCE_FOCAL_PLANE = "EXIF focal length and sensor resolution"
SOURCE_35MM = "EXIF 35mm-equivalent"
SOURCE_GUESS = f"guess (f = {GUESS_FOCAL_FACTOR} * max(W, H))"


def guess_camera(width: int, height: int) -> Camera:
    """The stated guess: ``f = GUESS_FOCAL_FACTOR * max(W, H)``, principal point at the centre."""
    return _camera(width, height, GUESS_FOCAL_FACTOR * max(width, height))


def camera_from_exif(path: Path) -> tuple[Camera, str]:
    """The camera of the photo at ``path`` and where its focal length comes from: EXIF focal
    length in mm with the focal-plane resolution (:data:`SOURCE_FOCAL_PLANE`), else EXIF
    35 mm-equivalent focal (:data:`SOURCE_35MM`), else :func:`guess_camera`
    (:data:`SOURCE_GUESS`). An unreadable image raises :class:`PramlocError`."""
    info = photo_camera(path)
    return info.camera, info.source


@dataclass(frozen=True)
class PhotoCamera:
    """What a photo's EXIF says of its camera: ``camera`` (SIMPLE_PINHOLE at the size as
    displayed), ``source`` of its focal length, and ``key``, the physical camera and zoom
    (``"make model WxH f=4.6mm"``) shared by the photos that can share intrinsics, or None
    when the EXIF names no make, model or focal length (such a photo gets a camera of its own)."""

    camera: Camera
    source: str
    key: str | None


def photo_camera(path: Path) -> PhotoCamera:
    """The :class:`PhotoCamera` of the photo at ``path`` (see :func:`camera_from_exif`)."""
    (w, h), exif = _read_exif(path)
    sub = exif.get_ifd(_EXIF_IFD)
    f_mm, plane_res, unit = _number(sub.get(_FOCAL)), _number(sub.get(_PLANE_X_RES)), sub.get(_PLANE_UNIT, 2)
    f35 = _number(sub.get(_FOCAL_35MM))
    make, model = (str(exif.get(t) or "").strip().strip("\x00").strip() for t in (_MAKE, _MODEL))
    focal_tag = f"f={f_mm:g}mm" if f_mm else (f"f35={f35:g}mm" if f35 else "")
    key = " ".join([make, model, f"{w}x{h}", focal_tag]) if (make or model) and focal_tag else None
    if f_mm and plane_res and unit in _UNIT_MM:
        # Pixels per mm on the sensor, at the sensor's full resolution (ExifImageWidth/Height):
        # scaled to this file's size when it was resized since.
        exif_long = max(_number(sub.get(_EXIF_WIDTH)) or 0, _number(sub.get(_EXIF_HEIGHT)) or 0)
        scale = max(w, h) / exif_long if exif_long else 1.0
        return PhotoCamera(_camera(w, h, f_mm * plane_res / _UNIT_MM[unit] * scale), SOURCE_FOCAL_PLANE, key)
    if f35:
        return PhotoCamera(_camera(w, h, f35 / FILM_35MM_WIDTH_MM * max(w, h)), SOURCE_35MM, key)
    return PhotoCamera(guess_camera(w, h), SOURCE_GUESS, key)


def cameras_by_key(paths: list[Path], cameras: list[Camera]) -> dict[str, str]:
    """The intrinsics of each EXIF camera (:attr:`PhotoCamera.key`) that a map knows: for
    the map images at ``paths`` with ``cameras``, each key whose images all have the same
    camera -> that camera as a string (:meth:`Camera.to_string`). A query photo of one of
    these cameras is localized with them. Images without a key are left out."""
    seen: dict[str, set[str]] = {}
    for path, camera in zip(paths, cameras):
        try:
            key = photo_camera(path).key
        except PramlocError:
            continue
        if key is not None:
            seen.setdefault(key, set()).add(camera.to_string())
    return {key: next(iter(cams)) for key, cams in seen.items() if len(cams) == 1}


FOCAL_TOLERANCE = 1.25  # a given focal this many times larger or smaller than EXIF's is warned about


def check_camera(path: Path, camera: Camera) -> None:
    """Raise :class:`PramlocError` (:func:`size_mismatch`) unless ``camera`` has the size
    of the image at ``path`` as displayed; warn when its focal length and the one the
    photo's EXIF states differ by more than :data:`FOCAL_TOLERANCE` (the pose depends on it)."""
    from . import logger

    exif_cam, source = camera_from_exif(path)  # at the size as displayed
    if (exif_cam.width, exif_cam.height) != (camera.width, camera.height):
        raise PramlocError(size_mismatch(str(path), (exif_cam.width, exif_cam.height), camera))
    if source != SOURCE_GUESS:
        given, stated = camera.to_pycolmap().mean_focal_length(), float(exif_cam.params[0])
        if max(given / stated, stated / given) > FOCAL_TOLERANCE:
            logger.warning("%s: the given focal length, %.0f px, differs from the %.0f px of the photo's EXIF "
                           "(%s); the pose depends on it: check --camera, or leave it out to use EXIF",
                           path, given, stated, source)


def size_mismatch(name: str, image_size: tuple[int, int], camera: Camera) -> str:
    """The one-line error of a camera whose size does not fit the image's."""
    return (f"{name}: camera {camera.width}x{camera.height} does not fit the image, {image_size[0]}x{image_size[1]} "
            "(as displayed, EXIF orientation applied); give the intrinsics at the image's size, or leave "
            "--camera out to estimate them")


def _read_exif(path: Path):
    """(W, H) as displayed and the EXIF of the image at ``path``."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            w, h = im.size
            exif = im.getexif()
    except (OSError, UnidentifiedImageError) as err:
        raise PramlocError(f"{path}: cannot read the image ({err})") from None
    if exif.get(_ORIENTATION) in (5, 6, 7, 8):  # rotated by 90 degrees when displayed (and decoded)
        w, h = h, w
    return (w, h), exif


def _camera(width: int, height: int, focal: float) -> Camera:
    return Camera("SIMPLE_PINHOLE", width, height, [focal, width / 2, height / 2])


def _number(value) -> float | None:
    """A positive finite EXIF number (rationals included), else None."""
    try:
        x = float(value)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return x if 0 < x < float("inf") else None
