"""The HDF5 schema of ``map.h5``: groups ``points``, ``images``, ``landmarks``, ``retrieval``.

- ``points/xyz`` (P, 3) float32, ``points/descriptors`` (P, D) quantised as the extractor's
  :class:`~pramloc.features.base.DescriptorSpec` declares (uint8, int8 or float16; the spec is
  the dataset's ``spec`` attribute, JSON; without it: RootSIFT uint8 x 512),
  ``points/landmark`` (P,) uint8/uint16, ``points/color`` (P, 3) uint8;
- ``images/names``, ``images/cameras`` (strings), ``images/qvec`` (M, 4), ``images/tvec``
  (M, 3) world-to-camera, ``images/offsets`` (M + 1,), ``images/points`` (O,) uint16/uint32
  and ``images/keypoints`` (O, 2) float32 (the observations' pixels);
- ``landmarks/centers`` (L, 3) float32;
- ``retrieval/*``: the retrieval index's arrays;
- ``points/track_offsets`` (P + 1,) uint32/int64 and ``points/track_images`` (O,) uint16/uint32: the
  map images observing each point (the inverse of ``images/points``, for the co-visible
  images of a pose without a scan of every observation). Optional: maps written before
  them get them computed at load.

Every dataset is stored contiguous and uncompressed, so that :func:`read_map_data` with
``lazy=True`` memory-maps the large ones (processes loading the same map share its pages).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import PramlocError
from ..features.base import LEGACY_ROOTSIFT, DescriptorSpec
from ..geometry import Camera, Pose
from .model import LandmarkMap

MAP_H5 = "map.h5"


def quantize_descriptors(desc: np.ndarray, spec: DescriptorSpec = LEGACY_ROOTSIFT) -> np.ndarray:
    """Descriptors (P, D) float32 -> stored (P, D) as ``spec`` declares (e.g. RootSIFT: uint8 x 512)."""
    return spec.quantize(desc)


def dequantize_descriptors(q: np.ndarray, spec: DescriptorSpec = LEGACY_ROOTSIFT) -> np.ndarray:
    """Stored (P, D) -> float32 (P, D), re-normalised for unit-norm descriptors."""
    return spec.dequantize(q)


class QuantizedDescriptors:
    """The map's stored descriptors (P, D) (quantised as ``spec`` declares), memory-mapped,
    dequantized row by row when indexed (``desc[idx]`` is
    ``dequantize_descriptors(stored[idx], spec)``); ``np.asarray`` gives them all."""

    def __init__(self, stored: np.ndarray, spec: DescriptorSpec = LEGACY_ROOTSIFT):
        self.stored, self.spec = stored, spec
        self.shape = stored.shape
        self.dtype = np.dtype(np.float32)

    def __len__(self) -> int:
        return len(self.stored)

    def __getitem__(self, idx) -> np.ndarray:
        rows = np.asarray(self.stored[idx])
        if rows.ndim == 1:
            return dequantize_descriptors(rows[None], self.spec)[0]
        return dequantize_descriptors(rows, self.spec)

    def __array__(self, dtype=None, copy=None):
        d = dequantize_descriptors(np.asarray(self.stored), self.spec)
        return d if dtype is None else d.astype(dtype)


def point_tracks(image_points: np.ndarray, image_offsets: np.ndarray, num_points: int) -> tuple[np.ndarray, np.ndarray]:
    """The inverse of the observations: (offsets (P + 1,), images (O,) uint32) such that
    point ``p`` is observed by map images ``images[offsets[p]:offsets[p + 1]]`` (ascending)."""
    obs_image = np.repeat(np.arange(len(image_offsets) - 1, dtype=np.uint32), np.diff(image_offsets))
    order = np.argsort(image_points, kind="stable")
    offsets = np.zeros(num_points + 1, np.int64)
    np.cumsum(np.bincount(image_points, minlength=num_points), out=offsets[1:])
    return offsets, obs_image[order]


def write_map_data(m: LandmarkMap, folder: Path) -> Path:
    """Write ``map.h5`` into ``folder`` (a staging folder). Returns its path."""
    import h5py

    path = Path(folder) / MAP_H5
    with h5py.File(path, "w") as f:
        g = f.create_group("points")
        g.create_dataset("xyz", data=m.xyz.astype(np.float32))
        spec = m.descriptor_spec
        if m.descriptors.shape[1:] != (spec.dim,):
            raise PramlocError(f"{path}: descriptors {m.descriptors.shape} do not match their declared dimension {spec.dim}")
        d = g.create_dataset("descriptors", data=(m.descriptors.stored if isinstance(m.descriptors, QuantizedDescriptors)
                                                  else quantize_descriptors(m.descriptors, spec)))
        d.attrs["spec"] = spec.to_json()
        lm_dtype = np.uint8 if m.num_landmarks <= 256 else np.uint16
        g.create_dataset("landmark", data=m.point_landmark.astype(lm_dtype))
        g.create_dataset("color", data=m.color.astype(np.uint8))
        offsets, images = point_tracks(np.asarray(m.image_points), np.asarray(m.image_offsets), len(m.xyz))
        g.create_dataset("track_offsets", data=offsets.astype(np.uint32 if offsets[-1] < 2 ** 32 else np.int64))
        g.create_dataset("track_images", data=images.astype(np.uint16 if len(m.image_names) <= 65536 else np.uint32))
        g = f.create_group("images")
        g.create_dataset("names", data=np.array(m.image_names, dtype=object), dtype=h5py.string_dtype())
        g.create_dataset("cameras", data=np.array([c.to_string() for c in m.cameras], dtype=object),
                         dtype=h5py.string_dtype())
        g.create_dataset("qvec", data=np.stack([p.qvec for p in m.poses]))
        g.create_dataset("tvec", data=np.stack([p.tvec for p in m.poses]))
        g.create_dataset("offsets", data=m.image_offsets.astype(np.int64))
        pt_dtype = np.uint16 if len(m.xyz) <= 65536 else np.uint32
        g.create_dataset("points", data=m.image_points.astype(pt_dtype))
        g.create_dataset("keypoints", data=m.image_keypoints.astype(np.float32))
        g = f.create_group("landmarks")
        g.create_dataset("centers", data=m.landmark_centers.astype(np.float32))
        g = f.create_group("retrieval")
        for k, v in m.retrieval.items():
            g.create_dataset(k, data=v)
    return path


def _mapped(f, dataset) -> np.ndarray:
    """A contiguous dataset of the open file ``f`` memory-mapped read-only (read into memory
    when it is chunked, compressed or empty)."""
    offset = dataset.id.get_offset()
    if offset is None or dataset.size == 0 or dataset.dtype.kind not in "iuf":
        return dataset[()]
    return np.memmap(f, dtype=dataset.dtype, mode="r", offset=offset, shape=dataset.shape)


def read_map_data(f, manifest: dict, path: Path, lazy: bool = False) -> LandmarkMap:
    """The map in ``map.h5`` (an open binary file). With ``lazy`` the large arrays (points,
    observations, retrieval vectors) are memory-mapped, not read: descriptors stay as stored
    (:class:`QuantizedDescriptors`), ids keep their stored integer types."""
    import h5py

    def text(v):
        return v.decode() if isinstance(v, bytes) else str(v)

    with h5py.File(f, "r") as h:
        big = (lambda name: _mapped(f, h[name])) if lazy else (lambda name: h[name][()])
        qv, tv = h["images/qvec"][()], h["images/tvec"][()]
        stored = h["points/descriptors"]
        spec = DescriptorSpec.from_json(stored.attrs["spec"]) if "spec" in stored.attrs else LEGACY_ROOTSIFT
        m = LandmarkMap(
            xyz=big("points/xyz"),
            descriptors=(QuantizedDescriptors(big("points/descriptors"), spec) if lazy
                         else dequantize_descriptors(stored[()], spec)),
            descriptor_spec=spec,
            point_landmark=big("points/landmark") if lazy else h["points/landmark"][()].astype(np.int64),
            color=big("points/color"),
            image_names=[text(n) for n in h["images/names"][()]],
            cameras=[Camera.from_string(text(c)) for c in h["images/cameras"][()]],
            poses=[Pose(q, t) for q, t in zip(qv, tv)],
            image_offsets=h["images/offsets"][()].astype(np.int64),
            image_points=big("images/points") if lazy else h["images/points"][()].astype(np.int64),
            image_keypoints=big("images/keypoints"),
            landmark_centers=h["landmarks/centers"][()].astype(np.float64),
            retrieval={k: (big(f"retrieval/{k}") if k == "vectors" else v[()]) for k, v in h["retrieval"].items()},
            manifest=manifest,
            path=path,
        )
        if "points/track_offsets" in h:
            m.tracks = (big("points/track_offsets"), big("points/track_images"))
        return m


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
