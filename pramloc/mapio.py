"""The map folder: the one place that knows its layout.

    maps/NAME/
      manifest.json   format version, config, source, feature type, counts, checksums
      map.h5          points, landmarks, images (poses, observations), retrieval data
      recognizer.pt   the trained landmark recognizer (when trained)
      sfm/            the sparse model (COLMAP binary) of the kept points

A map is written into a temporary sibling folder and moved into place only when
complete; loading checks the version and every part's size and checksum.

Concurrency (Linux): replacing a map (``--overwrite``) swaps the new folder and the old one
in one atomic ``renameat2(RENAME_EXCHANGE)``, so ``maps/NAME`` never disappears, and
:func:`load_map` reads every part through one directory descriptor, so a load that races
a replacement sees either the whole old map or the whole new one (it retries when the old
one is deleted under it). Elsewhere the old folder is moved aside first, which leaves a
moment when ``maps/NAME`` is missing ("map folder not found").
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import json
import os
import re
import secrets
import shutil
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import MAP_FORMAT_VERSION, __version__
from .errors import PramlocError
from .geometry import Camera, Pose

MANIFEST = "manifest.json"
MAP_H5 = "map.h5"
RECOGNIZER = "recognizer.pt"
SFM_DIR = "sfm"


@dataclass
class LandmarkMap:
    """Everything localization needs, in memory.

    Points are sorted by landmark: landmark ``l`` owns points
    ``landmark_offsets[l]:landmark_offsets[l + 1]``.

    - ``xyz`` (P, 3) float32 world coordinates; ``descriptors`` (P, D) float32 unit-norm
      (stored as uint8); ``point_landmark`` (P,) int64; ``color`` (P, 3) uint8.
    - ``image_names`` (M,), ``cameras`` (M,) :class:`Camera`, ``poses`` (M,) :class:`Pose`
      world-to-camera; ``image_offsets`` (M + 1,) and ``image_points`` (O,): map image ``i``
      observes points ``image_points[image_offsets[i]:image_offsets[i + 1]]``.
    - ``landmark_centers`` (L, 3).
    - ``retrieval``: arrays of the VLAD index (``vocabulary`` (K, D), ``vectors`` ...).
    """

    xyz: np.ndarray
    descriptors: np.ndarray
    point_landmark: np.ndarray
    color: np.ndarray
    image_names: list[str]
    cameras: list[Camera]
    poses: list[Pose]
    image_offsets: np.ndarray
    image_points: np.ndarray
    landmark_centers: np.ndarray
    retrieval: dict[str, np.ndarray] = field(default_factory=dict)
    manifest: dict = field(default_factory=dict)
    path: Path | None = None

    @property
    def num_landmarks(self) -> int:
        return len(self.landmark_centers)

    @property
    def landmark_offsets(self) -> np.ndarray:
        return np.searchsorted(self.point_landmark, np.arange(self.num_landmarks + 1))

    def landmark_points(self, l: int) -> np.ndarray:
        o = self.landmark_offsets
        return np.arange(o[l], o[l + 1])

    def image_point_ids(self, i: int) -> np.ndarray:
        return self.image_points[self.image_offsets[i]:self.image_offsets[i + 1]]

    def landmark_images(self) -> list[np.ndarray]:
        """Per landmark, the indices of the map images that observe it."""
        img = np.repeat(np.arange(len(self.image_names)), np.diff(self.image_offsets))
        lm = self.point_landmark[self.image_points]
        pairs = np.unique(np.stack([lm, img], 1), axis=0)
        return [pairs[pairs[:, 0] == l, 1] for l in range(self.num_landmarks)]

    @property
    def recognizer_path(self) -> Path | None:
        if self.path is None:
            return None
        p = self.path / RECOGNIZER
        return p if p.exists() else None


# ---------------------------------------------------------------------- writing

def quantize_descriptors(desc: np.ndarray) -> np.ndarray:
    """Unit-norm non-negative descriptors (RootSIFT) -> uint8 (x 512, clipped)."""
    return np.clip(np.round(desc * 512.0), 0, 255).astype(np.uint8)


def dequantize_descriptors(q: np.ndarray) -> np.ndarray:
    d = q.astype(np.float32)
    return d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-8)


def write_map_data(m: LandmarkMap, folder: Path) -> Path:
    """Write ``map.h5`` into ``folder`` (a staging folder). Returns its path."""
    import h5py

    path = Path(folder) / MAP_H5
    with h5py.File(path, "w") as f:
        g = f.create_group("points")
        g.create_dataset("xyz", data=m.xyz.astype(np.float32))
        g.create_dataset("descriptors", data=quantize_descriptors(m.descriptors))
        lm_dtype = np.uint8 if m.num_landmarks <= 256 else np.uint16
        g.create_dataset("landmark", data=m.point_landmark.astype(lm_dtype))
        g.create_dataset("color", data=m.color.astype(np.uint8))
        g = f.create_group("images")
        g.create_dataset("names", data=np.array(m.image_names, dtype=object), dtype=h5py.string_dtype())
        g.create_dataset("cameras", data=np.array([c.to_string() for c in m.cameras], dtype=object),
                         dtype=h5py.string_dtype())
        g.create_dataset("qvec", data=np.stack([p.qvec for p in m.poses]))
        g.create_dataset("tvec", data=np.stack([p.tvec for p in m.poses]))
        g.create_dataset("offsets", data=m.image_offsets.astype(np.int64))
        pt_dtype = np.uint16 if len(m.xyz) <= 65536 else np.uint32
        g.create_dataset("points", data=m.image_points.astype(pt_dtype))
        g = f.create_group("landmarks")
        g.create_dataset("centers", data=m.landmark_centers.astype(np.float32))
        g = f.create_group("retrieval")
        for k, v in m.retrieval.items():
            g.create_dataset(k, data=v)
    return path


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _part_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)


def _staging_tag() -> str:
    host = re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:20] or "host"
    return f"{host}-{os.getpid()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_stale_staging(out: Path) -> list[Path]:
    """Delete the temporary folders beside ``out`` left by builds of this machine that were
    killed (their process is gone). Returns what was removed."""
    out = Path(out)
    host = _staging_tag().rsplit("-", 1)[0]
    pattern = re.compile(rf"\.{re.escape(out.name)}\.(?:tmp|old)-{re.escape(host)}-(\d+)-[0-9a-f]+")
    removed = []
    if not out.parent.is_dir():
        return removed
    for p in out.parent.iterdir():
        m = pattern.fullmatch(p.name)
        if m and not _alive(int(m.group(1))):
            _remove(p)
            removed.append(p)
    return removed


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink()
        except OSError:
            pass


def staging_dir(out: Path) -> Path:
    """A fresh temporary folder beside ``out`` (same filesystem, so the final rename is
    atomic), named after this process so that a later build can remove it if this one is
    killed. Its permissions follow the umask, like any folder the user creates."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(out)
    for _ in range(100):
        p = out.parent / f".{out.name}.tmp-{_staging_tag()}-{secrets.token_hex(4)}"
        try:
            p.mkdir()
            return p
        except FileExistsError:
            continue
    raise PramlocError(f"{out.parent}: cannot create a temporary folder")


def write_manifest(folder: Path, m: LandmarkMap, extra: dict) -> dict:
    """Write ``manifest.json`` last, listing every part of ``folder`` with its size and
    checksum (a folder without a manifest is never a map)."""
    folder = Path(folder)
    files = {str(p.relative_to(folder)): {"bytes": p.stat().st_size, "sha256": _sha256(p)}
             for p in _part_files(folder)}
    manifest = {
        "format_version": MAP_FORMAT_VERSION,
        "pramloc_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **extra,
        "counts": {
            "images": len(m.image_names),
            "points": int(len(m.xyz)),
            "landmarks": int(m.num_landmarks),
            "observations": int(len(m.image_points)),
        },
        "files": files,
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2, default=_json_default))
    return manifest


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(type(o))


def _fsync(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_tree(folder: Path) -> None:
    """Flush a folder's files and entries to disk (a committed map survives a power cut)."""
    for p in [*folder.rglob("*"), folder]:
        _fsync(p)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux ``renameat2(RENAME_EXCHANGE)``). Returns False where
    the system or the file system does not support it (nothing is changed then)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # glibc < 2.28, musl
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def commit(staging: Path, out: Path, overwrite: bool) -> Path:
    """Move a complete staging folder into place. An existing ``out`` is replaced only
    with ``overwrite``: swapped with the staging folder in one atomic step where the system
    allows it (Linux), else moved aside first; then the old map is deleted. Readers never
    see a mix of the two (see :func:`load_map`)."""
    staging, out = Path(staging), Path(out)
    _fsync_tree(staging)
    if out.exists() or out.is_symlink():
        if not overwrite:
            shutil.rmtree(staging, ignore_errors=True)
            raise PramlocError(f"{out}: output exists (use --overwrite to replace it)")
        if exchange(staging, out):
            _remove(staging)  # now the old map
        else:
            trash = out.parent / f".{out.name}.old-{_staging_tag()}-{secrets.token_hex(4)}"
            os.replace(out, trash)
            os.replace(staging, out)
            _remove(trash)
    else:
        os.replace(staging, out)
    _fsync(out.parent)
    return out


# ---------------------------------------------------------------------- reading

class _Replaced(Exception):
    """The map folder was replaced while it was being read."""


_SHA256 = re.compile(r"[0-9a-f]{64}")


class _Folder:
    """One map folder, every part opened through one directory descriptor: all parts come
    from the same folder even if ``path`` is replaced (``--overwrite``) meanwhile."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.fd = None
        if os.open in os.supports_dir_fd:
            try:
                self.fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
            except (FileNotFoundError, NotADirectoryError):
                raise PramlocError(f"{self.path}: map folder not found") from None
            except OSError as err:
                raise PramlocError(f"{self.path}: cannot open map folder ({err.strerror})") from None
        elif not self.path.is_dir():
            raise PramlocError(f"{self.path}: map folder not found")

    def open(self, name: str):
        """A binary file object of part ``name`` (FileNotFoundError if absent)."""
        if self.fd is None:
            return open(self.path / name, "rb")
        fd = os.open(name, os.O_RDONLY, dir_fd=self.fd)
        return os.fdopen(fd, "rb")

    def replaced(self) -> bool:
        """Whether ``path`` is no longer the folder this object reads."""
        if self.fd is None:
            return False
        try:
            st, own = os.stat(self.path), os.fstat(self.fd)
        except OSError:
            return True
        return (st.st_dev, st.st_ino) != (own.st_dev, own.st_ino)

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _read_manifest(folder: _Folder) -> dict:
    path = folder.path
    try:
        with folder.open(MANIFEST) as f:
            text = f.read()
    except FileNotFoundError:
        raise PramlocError(f"{path}: not a pramloc map (no {MANIFEST}; an unfinished build?)") from None
    except OSError as err:
        raise PramlocError(f"{path / MANIFEST}: cannot read manifest ({err.strerror})") from None
    try:
        manifest = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise PramlocError(f"{path / MANIFEST}: manifest is corrupt (not valid JSON)") from None
    if not isinstance(manifest, dict):
        raise PramlocError(f"{path / MANIFEST}: manifest is corrupt (not a JSON object)")
    version = manifest.get("format_version")
    if version != MAP_FORMAT_VERSION:
        raise PramlocError(f"{path}: map format version {version} is not supported by pramloc "
                           f"{__version__} (expects {MAP_FORMAT_VERSION}); rebuild the map")
    files = manifest.get("files")
    if not isinstance(files, dict) or MAP_H5 not in files:
        raise PramlocError(f"{path / MANIFEST}: manifest is corrupt (no list of parts with {MAP_H5})")
    for name, info in files.items():
        parts = name.split("/")
        if name.startswith("/") or "\\" in name or any(p in ("", ".", "..") for p in parts):
            raise PramlocError(f"{path / MANIFEST}: manifest is corrupt (bad part name {name[:80]!r})")
        if not (isinstance(info, dict) and isinstance(info.get("bytes"), int) and info["bytes"] >= 0
                and isinstance(info.get("sha256"), str) and _SHA256.fullmatch(info["sha256"])):
            raise PramlocError(f"{path / MANIFEST}: manifest is corrupt (bad entry for {name[:80]!r})")
    for key in ("feature", "counts"):
        if not isinstance(manifest.get(key), dict):
            raise PramlocError(f"{path / MANIFEST}: manifest is corrupt (no {key!r})")
    return manifest


def _open_parts(folder: _Folder, manifest: dict) -> dict:
    """Open every part listed in the manifest (all at once: once open, a part stays
    readable even if its folder is deleted). {name: file object}; closes them on error."""
    files = {}
    try:
        for name in manifest["files"]:
            try:
                files[name] = folder.open(name)
            except FileNotFoundError:
                raise PramlocError(f"{folder.path / name}: map part is missing") from None
            except OSError as err:
                raise PramlocError(f"{folder.path / name}: cannot read map part ({err.strerror})") from None
    except BaseException:
        for f in files.values():
            f.close()
        raise
    return files


def _check_part(p: Path, f, info: dict, checksums: bool) -> None:
    """Size (and checksum) of one open part; leaves the file rewound, so that what is
    parsed is exactly what was checked."""
    size = os.fstat(f.fileno()).st_size
    if size != info["bytes"]:
        raise PramlocError(f"{p}: map part is truncated or changed ({size} bytes, expected {info['bytes']})")
    if checksums:
        h = hashlib.sha256()
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
        if h.hexdigest() != info["sha256"]:
            raise PramlocError(f"{p}: map part is corrupt (checksum mismatch)")
        f.seek(0)


def _checked_parts(folder: _Folder, checksums: bool) -> tuple[dict, dict]:
    """(manifest, {name: open file}) of a folder whose parts all passed the checks."""
    manifest = _read_manifest(folder)
    files = _open_parts(folder, manifest)
    try:
        for name, f in files.items():
            _check_part(folder.path / name, f, manifest["files"][name], checksums)
    except BaseException:
        for f in files.values():
            f.close()
        raise
    return manifest, files


def read_manifest(path: Path) -> dict:
    """The manifest of the map folder ``path`` (format version and structure checked)."""
    with _Folder(path) as folder:
        return _read_manifest(folder)


def validate(path: Path, checksums: bool = True) -> dict:
    """Check that every part listed in the manifest exists with its size (and checksum)."""
    with _Folder(path) as folder:
        manifest, files = _checked_parts(folder, checksums)
    for f in files.values():
        f.close()
    return manifest


def _read_map_data(f, manifest: dict, path: Path) -> LandmarkMap:
    import h5py

    def text(v):
        return v.decode() if isinstance(v, bytes) else str(v)

    with h5py.File(f, "r") as h:
        qv, tv = h["images/qvec"][()], h["images/tvec"][()]
        return LandmarkMap(
            xyz=h["points/xyz"][()],
            descriptors=dequantize_descriptors(h["points/descriptors"][()]),
            point_landmark=h["points/landmark"][()].astype(np.int64),
            color=h["points/color"][()],
            image_names=[text(n) for n in h["images/names"][()]],
            cameras=[Camera.from_string(text(c)) for c in h["images/cameras"][()]],
            poses=[Pose(q, t) for q, t in zip(qv, tv)],
            image_offsets=h["images/offsets"][()].astype(np.int64),
            image_points=h["images/points"][()].astype(np.int64),
            landmark_centers=h["landmarks/centers"][()].astype(np.float64),
            retrieval={k: v[()] for k, v in h["retrieval"].items()},
            manifest=manifest,
            path=path,
        )


def check_consistency(m: LandmarkMap) -> None:
    """The map's arrays agree with each other and with the manifest's counts (what the
    localizer indexes with); raises :class:`PramlocError` naming what does not."""
    P, M, L = len(m.xyz), len(m.image_names), m.num_landmarks
    problems = []
    if m.xyz.shape != (P, 3) or len(m.descriptors) != P or len(m.point_landmark) != P or len(m.color) != P:
        problems.append("point arrays of different lengths")
    if len(m.cameras) != M or len(m.poses) != M or m.image_offsets.shape != (M + 1,):
        problems.append("image arrays of different lengths")
    elif M and (m.image_offsets[0] != 0 or m.image_offsets[-1] != len(m.image_points)
                or np.any(np.diff(m.image_offsets) < 0)):
        problems.append("bad image offsets")
    if len(m.image_points) and (m.image_points.min() < 0 or m.image_points.max() >= P):
        problems.append("observations of unknown points")
    if P and (m.point_landmark.min() < 0 or m.point_landmark.max() >= L or np.any(np.diff(m.point_landmark) < 0)):
        problems.append("bad landmark ids")
    if not (np.all(np.isfinite(m.xyz)) and np.all(np.isfinite(m.landmark_centers))):
        problems.append("non-finite coordinates")
    counts = m.manifest.get("counts", {})
    expected = {"images": M, "points": P, "landmarks": L, "observations": len(m.image_points)}
    if any(k in counts and counts[k] != v for k, v in expected.items()):
        problems.append(f"counts {counts} differ from the data {expected}")
    if problems:
        raise PramlocError(f"{m.path}: map data is inconsistent ({'; '.join(problems)})")


def _load(path: Path, checksums: bool) -> LandmarkMap:
    with _Folder(path) as folder:
        try:
            manifest, files = _checked_parts(folder, checksums)
        except PramlocError:
            if folder.replaced():  # the map was rebuilt under us: read the new one
                raise _Replaced from None
            raise
    try:
        m = _read_map_data(files[MAP_H5], manifest, path)
    except (OSError, KeyError, ValueError, TypeError, IndexError, AttributeError, PramlocError) as err:
        msg = str(err).splitlines()[0][:160] if str(err) else type(err).__name__
        raise PramlocError(f"{path / MAP_H5}: cannot read map data ({msg})") from None
    finally:
        for f in files.values():
            f.close()
    check_consistency(m)
    return m


def load_map(path: Path, checksums: bool = True) -> LandmarkMap:
    """Load and validate a map folder. Safe while another process replaces the map
    (``build-map --overwrite``): the result is the old map or the new one, never a mix."""
    path = Path(path)
    for _ in range(10):
        try:
            return _load(path, checksums)
        except _Replaced:
            continue
    raise PramlocError(f"{path}: the map kept changing while it was loaded (being rebuilt?); try again")


def read_part(m: LandmarkMap, name: str) -> bytes:
    """The bytes of part ``name`` (e.g. :data:`RECOGNIZER`) of a loaded map, checked
    against the manifest it was loaded with: a part read after the map folder was
    replaced (``build-map --overwrite``) raises instead of mixing two maps."""
    info = m.manifest.get("files", {}).get(name)
    if m.path is None or info is None:
        raise PramlocError(f"{m.path}: map has no part {name!r}")
    with _Folder(m.path) as folder:
        files = _open_parts(folder, {"files": {name: info}})
    with files[name] as f:
        data = f.read()
    if len(data) != info["bytes"] or hashlib.sha256(data).hexdigest() != info["sha256"]:
        raise PramlocError(f"{m.path / name}: the map changed since it was loaded (rebuilt?); load it again")
    return data


def part_sizes(path: Path) -> dict[str, int]:
    """Bytes on disk by part: map.h5, recognizer.pt, sfm/, manifest.json."""
    path = Path(path)
    sizes: dict[str, int] = {}
    for p in path.rglob("*"):
        if p.is_file():
            top = p.relative_to(path).parts[0]
            sizes[top] = sizes.get(top, 0) + p.stat().st_size
    return sizes


def h5_part_sizes(path: Path) -> dict[str, int]:
    """Bytes of each dataset group inside map.h5 (points, images, landmarks, retrieval)."""
    import h5py

    out: dict[str, int] = {}
    with h5py.File(Path(path) / MAP_H5, "r") as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                top = name.split("/")[0]
                out[top] = out.get(top, 0) + obj.id.get_storage_size()
        f.visititems(visit)
    return out


def retrieval_index(m: LandmarkMap):
    """The map's VLAD index (:class:`pramloc.retrieval.VladIndex`)."""
    from .retrieval import VladIndex

    if "vocabulary" not in m.retrieval:
        raise PramlocError(f"{m.path}: map has no retrieval index")
    return VladIndex.from_arrays({**m.retrieval, "names": np.array(m.image_names, dtype=object)})
