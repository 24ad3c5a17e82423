"""The map folder: the one place that knows its layout.

    maps/NAME/
      manifest.json   format version, config, source, feature type, counts, checksums
      map.h5          points, landmarks, images (poses, observations), retrieval data
      recognizer.pt   the trained landmark recognizer (when trained)
      sfm/            the sparse model (COLMAP binary) of the kept points

A map is written into a temporary sibling folder and renamed into place only when
complete; loading checks the version and every part's size and checksum.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
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


def staging_dir(out: Path) -> Path:
    """A fresh temporary folder beside ``out`` (same filesystem, so the rename is atomic)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))


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


def commit(staging: Path, out: Path, overwrite: bool) -> Path:
    """Move a complete staging folder into place. An existing ``out`` is replaced only
    with ``overwrite`` (moved aside first, then removed, so readers never see a mix)."""
    staging, out = Path(staging), Path(out)
    if out.exists():
        if not overwrite:
            shutil.rmtree(staging, ignore_errors=True)
            raise PramlocError(f"{out}: output exists (use --overwrite to replace it)")
        trash = out.parent / f".{out.name}.old-{os.getpid()}-{time.time_ns()}"
        os.replace(out, trash)
        os.replace(staging, out)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(staging, out)
    return out


# ---------------------------------------------------------------------- reading

def read_manifest(path: Path) -> dict:
    path = Path(path)
    if not path.is_dir():
        raise PramlocError(f"{path}: map folder not found")
    mf = path / MANIFEST
    if not mf.is_file():
        raise PramlocError(f"{path}: not a pramloc map (no {MANIFEST}; an unfinished build?)")
    try:
        manifest = json.loads(mf.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise PramlocError(f"{mf}: manifest is corrupt (not valid JSON)") from None
    version = manifest.get("format_version")
    if version != MAP_FORMAT_VERSION:
        raise PramlocError(f"{path}: map format version {version} is not supported by pramloc "
                           f"{__version__} (expects {MAP_FORMAT_VERSION}); rebuild the map")
    return manifest


def validate(path: Path, checksums: bool = True) -> dict:
    """Check that every part listed in the manifest exists with its size (and checksum)."""
    path = Path(path)
    manifest = read_manifest(path)
    for name, info in manifest.get("files", {}).items():
        p = path / name
        if not p.is_file():
            raise PramlocError(f"{p}: map part is missing")
        if p.stat().st_size != info["bytes"]:
            raise PramlocError(f"{p}: map part is truncated or changed "
                               f"({p.stat().st_size} bytes, expected {info['bytes']})")
        if checksums and _sha256(p) != info["sha256"]:
            raise PramlocError(f"{p}: map part is corrupt (checksum mismatch)")
    return manifest


def load_map(path: Path, checksums: bool = True) -> LandmarkMap:
    """Load and validate a map folder."""
    import h5py

    path = Path(path)
    manifest = validate(path, checksums)
    try:
        with h5py.File(path / MAP_H5, "r") as f:
            names = [n.decode() if isinstance(n, bytes) else n for n in f["images/names"][()]]
            cams = [Camera.from_string(c.decode() if isinstance(c, bytes) else c) for c in f["images/cameras"][()]]
            qv, tv = f["images/qvec"][()], f["images/tvec"][()]
            m = LandmarkMap(
                xyz=f["points/xyz"][()],
                descriptors=dequantize_descriptors(f["points/descriptors"][()]),
                point_landmark=f["points/landmark"][()].astype(np.int64),
                color=f["points/color"][()],
                image_names=names,
                cameras=cams,
                poses=[Pose(q, t) for q, t in zip(qv, tv)],
                image_offsets=f["images/offsets"][()],
                image_points=f["images/points"][()].astype(np.int64),
                landmark_centers=f["landmarks/centers"][()].astype(np.float64),
                retrieval={k: v[()] for k, v in f["retrieval"].items()},
                manifest=manifest,
                path=path,
            )
    except (OSError, KeyError) as err:
        raise PramlocError(f"{path / MAP_H5}: cannot read map data ({err})") from None
    return m


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
