"""COLMAP models (text or binary) from untrusted files: checked, then read with pycolmap.

pycolmap's readers are not meant for untrusted files. On malformed text they raise
``ValueError``/``IndexError``/``RuntimeError``, but they also silently accept wrong input
(a negative image size wraps around to 2^64, a zero quaternion becomes a pose, an
``images.txt`` without its empty ``POINTS2D`` lines loses half of its images, a name with
a space is cut at the space, two images may share a name), and a truncated or corrupt
binary file makes them read past its end forever, with memory growing until the machine
runs out. So :func:`read_colmap_model` first checks the files with a cheap pass over their
structure (no geometry), and only a model that passes is given to pycolmap; every problem
is a :class:`PramlocError` naming the file (and line).
"""

from __future__ import annotations

import math
import re
import struct
from pathlib import Path

from ..errors import PramlocError
from ..geometry import MAX_IMAGE_SIDE, colmap_camera_models

PARTS = ("cameras", "images", "points3D")
MAX_ID = 2**32 - 2  # 32-bit ids (camera, image, rig, frame); 2^32 - 1 means "invalid"
MAX_POINT_ID = 2**63 - 1


# ---------------------------------------------------------------------- text models

_WS = " \t\n\v\f\r"  # C++ isspace, what COLMAP's readers split on (not Python's str.split)
_SPLIT = re.compile(r"[ \t\n\v\f\r]+")
_NUM_RE = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")  # what C++ streams read
_INT_RE = re.compile(r"[+-]?\d+")
_POINT3D_ID_RE = re.compile(r"-1|\+?\d{1,19}")


def _int(tok: str, lo: int, hi: int) -> int | None:
    if len(tok) > 24 or not _INT_RE.fullmatch(tok):  # (Python refuses to parse 4300+ digits)
        return None
    v = int(tok)
    return v if lo <= v <= hi else None


def _float(tok: str) -> float | None:
    if len(tok) > 400 or not _NUM_RE.fullmatch(tok):
        return None
    v = float(tok)
    return v if math.isfinite(v) else None


def _floats(toks: list[str]) -> list[float] | None:
    out = [_float(t) for t in toks]
    return None if any(v is None for v in out) else out


def _text_lines(path: Path) -> list[str]:
    """Raw lines as C++ ``std::getline`` sees them (the blank POINTS2D lines matter)."""
    from . import read_text

    text = read_text(path)
    if "\0" in text:
        raise PramlocError(f"{path}: not a text file (contains NUL bytes)")
    lines = text.split("\n")
    return lines[:-1] if text.endswith("\n") else lines


def _data_lines(path: Path):
    """(line number, tokens) of every line that is neither blank nor a comment."""
    for lineno, line in enumerate(_text_lines(path), 1):
        line = line.strip(_WS)
        if line and not line.startswith("#"):
            yield lineno, _SPLIT.split(line)


def _check_cameras_text(path: Path) -> set[int]:
    models = colmap_camera_models()
    cams: set[int] = set()
    for n, t in _data_lines(path):
        where = f"{path}:{n}"
        if len(t) < 4:
            raise PramlocError(f"{where}: expected 'CAMERA_ID MODEL WIDTH HEIGHT PARAMS...'")
        cid = _int(t[0], 0, MAX_ID)
        if cid is None:
            raise PramlocError(f"{where}: invalid camera id {t[0][:40]!r}")
        if t[1] not in models:
            raise PramlocError(f"{where}: unknown camera model {t[1][:40]!r}")
        if _int(t[2], 1, MAX_IMAGE_SIDE) is None or _int(t[3], 1, MAX_IMAGE_SIDE) is None:
            raise PramlocError(f"{where}: invalid image size {t[2][:20]!r} x {t[3][:20]!r}")
        need = models[t[1]][1]
        if len(t) - 4 != need:
            raise PramlocError(f"{where}: camera model {t[1]} needs {need} parameters, got {len(t) - 4}")
        if _floats(t[4:]) is None:
            raise PramlocError(f"{where}: camera parameters must be finite numbers")
        if cid in cams:
            raise PramlocError(f"{where}: camera id {cid} appears twice")
        cams.add(cid)
    return cams


def _check_pose(where: str, toks: list[str]) -> None:
    vals = _floats(toks)
    if vals is None:
        raise PramlocError(f"{where}: pose values must be finite numbers")
    if max(abs(v) for v in vals[:4]) < 1e-8:
        raise PramlocError(f"{where}: the pose quaternion is zero")


def _check_images_text(path: Path, cams: set[int]) -> dict[int, int]:
    """Returns {image id: number of 2D points}."""
    lines = _text_lines(path)
    images: dict[int, int] = {}
    names: dict[str, int] = {}
    i = 0
    while i < len(lines):
        line = lines[i].strip(_WS)
        i += 1
        if not line or line.startswith("#"):
            continue
        where = f"{path}:{i}"
        t = _SPLIT.split(line)
        if len(t) != 10:
            if len(t) > 10 and _floats(t[1:8]) is not None and _int(t[0], 0, MAX_ID) is not None:
                raise PramlocError(f"{where}: image name {' '.join(t[9:])[:80]!r} contains spaces "
                                   "(COLMAP text models cannot store it)")
            raise PramlocError(f"{where}: expected 'IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME' "
                               "(each image takes two lines, the second may be empty)")
        iid, cid, name = _int(t[0], 0, MAX_ID), _int(t[8], 0, MAX_ID), t[9]
        if iid is None:
            raise PramlocError(f"{where}: invalid image id {t[0][:40]!r}")
        _check_pose(where, t[1:8])
        if cid is None:
            raise PramlocError(f"{where}: invalid camera id {t[8][:40]!r}")
        if cid not in cams:
            raise PramlocError(f"{where}: image {name!r} refers to camera {cid}, which is not in cameras.txt")
        if iid in images:
            raise PramlocError(f"{where}: image id {iid} appears twice")
        if name in names:
            raise PramlocError(f"{where}: image name {name!r} appears twice (also on line {names[name]})")
        if i >= len(lines):
            raise PramlocError(f"{where}: image {name!r} has no POINTS2D line (each image takes two lines, "
                               "the second may be empty)")
        points = lines[i].strip(_WS)
        i += 1
        p = _SPLIT.split(points) if points else []
        if len(p) % 3 or not (all(map(_NUM_RE.fullmatch, p[0::3])) and all(map(_NUM_RE.fullmatch, p[1::3]))
                              and all(map(_POINT3D_ID_RE.fullmatch, p[2::3]))):
            raise PramlocError(f"{path}:{i}: malformed POINTS2D line of image {name!r} "
                               "(expected 'X Y POINT3D_ID' triples)")
        images[iid] = len(p) // 3
        names[name] = i - 1
    return images


def _check_points_text(path: Path, images: dict[int, int]) -> None:
    seen: set[int] = set()
    for n, t in _data_lines(path):
        where = f"{path}:{n}"
        if len(t) < 8 or len(t) % 2:
            raise PramlocError(f"{where}: expected 'POINT3D_ID X Y Z R G B ERROR (IMAGE_ID POINT2D_IDX)...'")
        pid = _int(t[0], 0, MAX_POINT_ID)
        if pid is None:
            raise PramlocError(f"{where}: invalid point id {t[0][:40]!r}")
        if _floats(t[1:4]) is None or _float(t[7]) is None:
            raise PramlocError(f"{where}: point coordinates and error must be finite numbers")
        if any(_int(c, 0, 255) is None for c in t[4:7]):
            raise PramlocError(f"{where}: colour values must be integers 0-255")
        if pid in seen:
            raise PramlocError(f"{where}: point id {pid} appears twice")
        seen.add(pid)
        for img, idx in zip(t[8::2], t[9::2]):
            iid, k = _int(img, 0, MAX_ID), _int(idx, 0, MAX_ID)
            if iid is None or k is None:
                raise PramlocError(f"{where}: malformed track element {img[:20]!r} {idx[:20]!r}")
            if iid not in images:
                raise PramlocError(f"{where}: track refers to image {iid}, which is not in images.txt")
            if k >= images[iid]:
                raise PramlocError(f"{where}: track refers to 2D point {k} of image {iid}, "
                                   f"which has {images[iid]}")


def _sensor_types() -> set[str]:
    import pycolmap

    return {n for n in pycolmap.SensorType.__members__ if n != "INVALID"}


def _check_rigs_text(path: Path) -> None:
    types = _sensor_types()
    for n, t in _data_lines(path):
        where = f"{path}:{n}"
        ok = len(t) >= 2 and _int(t[0], 0, MAX_ID) is not None and _int(t[1], 0, MAX_ID) is not None
        pos = 2
        if ok and int(t[1]) > 0:
            ok = len(t) >= 4 and t[2] in types and _int(t[3], 0, MAX_ID) is not None
            pos = 4
            for _ in range(int(t[1]) - 1 if ok else 0):
                if len(t) < pos + 3 or t[pos] not in types or _int(t[pos + 1], 0, MAX_ID) is None \
                        or t[pos + 2] not in ("0", "1"):
                    ok = False
                    break
                has_pose = t[pos + 2] == "1"
                pos += 3
                if has_pose:
                    if len(t) < pos + 7:
                        ok = False
                        break
                    _check_pose(where, t[pos:pos + 7])
                    pos += 7
        if not ok or pos != len(t):
            raise PramlocError(f"{where}: malformed rig line")


def _check_frames_text(path: Path) -> None:
    types = _sensor_types()
    for n, t in _data_lines(path):
        where = f"{path}:{n}"
        if len(t) < 10 or _int(t[0], 0, MAX_ID) is None or _int(t[1], 0, MAX_ID) is None \
                or _int(t[9], 0, MAX_ID) is None or len(t) != 10 + 3 * int(t[9]):
            raise PramlocError(f"{where}: malformed frame line")
        _check_pose(where, t[2:9])
        for k in range(10, len(t), 3):
            if t[k] not in types or _int(t[k + 1], 0, MAX_ID) is None or _int(t[k + 2], 0, MAX_POINT_ID) is None:
                raise PramlocError(f"{where}: malformed frame data id")


def check_text_model(model_dir: Path) -> None:
    """Structural check of a COLMAP text model (see the module docstring)."""
    model_dir = Path(model_dir)
    for part, check in (("rigs", _check_rigs_text), ("frames", _check_frames_text)):
        if (model_dir / f"{part}.txt").exists():
            check(model_dir / f"{part}.txt")
    cams = _check_cameras_text(model_dir / "cameras.txt")
    images = _check_images_text(model_dir / "images.txt", cams)
    _check_points_text(model_dir / "points3D.txt", images)


# ---------------------------------------------------------------------- binary models

class _Truncated(Exception):
    pass


class _Bin:
    """A cursor over a little-endian binary file that never reads past its end."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self.buf = path.read_bytes()
        except OSError as err:
            raise PramlocError(f"{path}: cannot read file ({err.strerror or err})") from None
        self.pos = 0

    def take(self, fmt: str):
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.buf):
            raise _Truncated
        out = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += size
        return out

    def skip(self, count: int, size: int) -> None:
        """Skip ``count`` records of ``size`` bytes (checked before any loop uses ``count``)."""
        if count * size > len(self.buf) - self.pos:
            raise _Truncated
        self.pos += count * size

    def count(self, min_record: int) -> int:
        (n,) = self.take("<Q")
        if n * min_record > len(self.buf) - self.pos:
            raise _Truncated
        return n

    def error(self, what: str) -> PramlocError:
        return PramlocError(f"{self.path}: {what} (byte {self.pos})")


def _finite(vals) -> bool:
    return all(math.isfinite(v) for v in vals)


def _check_cameras_bin(f: _Bin) -> set[int]:
    by_id = {mid: (name, n) for name, (mid, n) in colmap_camera_models().items()}
    cams = set()
    for _ in range(f.count(24)):
        cid, model, w, h = f.take("<IiQQ")
        if model not in by_id:
            raise f.error(f"unknown camera model id {model}")
        if not (0 < w <= MAX_IMAGE_SIDE and 0 < h <= MAX_IMAGE_SIDE):
            raise f.error(f"camera {cid} has invalid size {w}x{h}")
        if not _finite(f.take(f"<{by_id[model][1]}d")):
            raise f.error(f"camera {cid} has non-finite parameters")
        if cid in cams:
            raise f.error(f"camera id {cid} appears twice")
        cams.add(cid)
    return cams


def _check_images_bin(f: _Bin, cams: set[int]) -> None:
    ids, names = set(), set()
    for _ in range(f.count(73)):
        iid, *pose, cid = f.take("<I7dI")
        if not _finite(pose):
            raise f.error(f"image {iid} has a non-finite pose")
        if max(abs(v) for v in pose[:4]) < 1e-8:
            raise f.error(f"image {iid} has a zero quaternion")
        if cid not in cams:
            raise f.error(f"image {iid} refers to camera {cid}, which is not in cameras.bin")
        end = f.buf.find(b"\0", f.pos)
        if end < 0:
            raise _Truncated
        try:
            name = f.buf[f.pos:end].decode("utf-8")
        except UnicodeDecodeError:
            raise f.error(f"image {iid} has a name that is not UTF-8") from None
        f.pos = end + 1
        if iid in ids or name in names:
            raise f.error(f"image id {iid} or name {name!r} appears twice")
        ids.add(iid)
        names.add(name)
        (num_points,) = f.take("<Q")
        f.skip(num_points, 24)


def _check_points_bin(f: _Bin) -> None:
    for _ in range(f.count(51)):
        pid, x, y, z, r, g, b, err, track = f.take("<Q3d3BdQ")
        if not _finite((x, y, z)):
            raise f.error(f"point {pid} has non-finite coordinates")
        f.skip(track, 8)


def _check_rigs_bin(f: _Bin) -> None:
    for _ in range(f.count(8)):
        _, sensors = f.take("<II")
        if sensors > 0:
            f.take("<iI")
        if sensors * 9 > len(f.buf) - f.pos + 9:
            raise _Truncated
        for _ in range(max(sensors - 1, 0)):
            _, _, has_pose = f.take("<iIB")
            if has_pose:
                f.take("<7d")


def _check_frames_bin(f: _Bin) -> None:
    for _ in range(f.count(68)):
        fid, _, *pose, data = f.take("<II7dI")
        if not _finite(pose) or max(abs(v) for v in pose[:4]) < 1e-8:
            raise f.error(f"frame {fid} has a zero or non-finite pose")
        f.skip(data, 16)


def check_binary_model(model_dir: Path) -> None:
    """Structural check of a COLMAP binary model: every count fits in its file, every file
    ends where its last record ends (see the module docstring)."""
    model_dir = Path(model_dir)
    checks = [("rigs", _check_rigs_bin), ("frames", _check_frames_bin), ("cameras", _check_cameras_bin),
              ("images", None), ("points3D", _check_points_bin)]
    cams: set[int] = set()
    for part, check in checks:
        path = model_dir / f"{part}.bin"
        if not path.exists():
            continue
        f = _Bin(path)
        try:
            if part == "cameras":
                cams = _check_cameras_bin(f)
            elif part == "images":
                _check_images_bin(f, cams)
            else:
                check(f)
        except _Truncated:
            raise PramlocError(f"{path}: truncated or corrupt COLMAP binary file") from None
        if f.pos != len(f.buf):
            raise PramlocError(f"{path}: corrupt COLMAP binary file ({len(f.buf) - f.pos} unexpected bytes "
                               "after its last record)")


# ---------------------------------------------------------------------- reading

def read_colmap_model(model_dir: Path):
    """Read a COLMAP model folder (``.bin`` or ``.txt``) with pycolmap after checking its
    files. Raises only :class:`PramlocError`."""
    import pycolmap

    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise PramlocError(f"{model_dir}: COLMAP model folder not found")
    for ext in (".bin", ".txt"):
        files = [model_dir / f"{p}{ext}" for p in PARTS]
        if any(f.exists() for f in files):
            missing = [f.name for f in files if not f.is_file()]
            if missing:
                raise PramlocError(f"{model_dir}: COLMAP model is missing {', '.join(missing)}")
            break
    else:
        raise PramlocError(f"{model_dir}: no COLMAP model (cameras/images/points3D .bin or .txt)")
    if ext == ".bin":
        check_binary_model(model_dir)
    else:
        check_text_model(model_dir)
    try:
        rec = pycolmap.Reconstruction(str(model_dir))
    except Exception as err:  # pycolmap raises plain RuntimeError / ValueError / IndexError on bad files
        msg = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise PramlocError(f"{model_dir}: cannot read COLMAP model ({msg})") from None
    return rec
