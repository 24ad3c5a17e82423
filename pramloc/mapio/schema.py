"""The HDF5 schema of ``map.h5``: groups ``points``, ``images``, ``landmarks``, ``retrieval``.

- ``points/xyz`` (P, 3) float32, ``points/descriptors`` (P, D) quantised as the extractor's
  :class:`~pramloc.features.base.DescriptorSpec` declares (uint8, int8 or float16; the spec is
  the dataset's ``spec`` attribute, JSON; without it: RootSIFT uint8 x 512),
  ``points/landmark`` (P,) uint8/uint16, ``points/color`` (P, 3) uint8;
- ``images/names``, ``images/cameras`` (strings), ``images/qvec`` (M, 4), ``images/tvec``
  (M, 3) world-to-camera, ``images/offsets`` (M + 1,), ``images/points`` (O,) uint16/uint32
  and ``images/keypoints`` (O, 2) float32 (the observations' pixels);
- ``landmarks/centers`` (L, 3) float32;
- ``retrieval/*``: the retrieval index's arrays.
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
        d = g.create_dataset("descriptors", data=quantize_descriptors(m.descriptors, spec))
        d.attrs["spec"] = spec.to_json()
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
        g.create_dataset("keypoints", data=m.image_keypoints.astype(np.float32))
        g = f.create_group("landmarks")
        g.create_dataset("centers", data=m.landmark_centers.astype(np.float32))
        g = f.create_group("retrieval")
        for k, v in m.retrieval.items():
            g.create_dataset(k, data=v)
    return path


def read_map_data(f, manifest: dict, path: Path) -> LandmarkMap:
    import h5py

    def text(v):
        return v.decode() if isinstance(v, bytes) else str(v)

    with h5py.File(f, "r") as h:
        qv, tv = h["images/qvec"][()], h["images/tvec"][()]
        stored = h["points/descriptors"]
        spec = DescriptorSpec.from_json(stored.attrs["spec"]) if "spec" in stored.attrs else LEGACY_ROOTSIFT
        return LandmarkMap(
            xyz=h["points/xyz"][()],
            descriptors=dequantize_descriptors(stored[()], spec),
            descriptor_spec=spec,
            point_landmark=h["points/landmark"][()].astype(np.int64),
            color=h["points/color"][()],
            image_names=[text(n) for n in h["images/names"][()]],
            cameras=[Camera.from_string(text(c)) for c in h["images/cameras"][()]],
            poses=[Pose(q, t) for q, t in zip(qv, tv)],
            image_offsets=h["images/offsets"][()].astype(np.int64),
            image_points=h["images/points"][()].astype(np.int64),
            image_keypoints=h["images/keypoints"][()],
            landmark_centers=h["landmarks/centers"][()].astype(np.float64),
            retrieval={k: v[()] for k, v in h["retrieval"].items()},
            manifest=manifest,
            path=path,
        )


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
