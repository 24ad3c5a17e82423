"""The map's data model in memory (:class:`LandmarkMap`) and its consistency checks."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import PramlocError
from ..features.base import LEGACY_ROOTSIFT, DescriptorSpec
from ..geometry import Camera, Pose

RECOGNIZER = "recognizer.pt"  # the map folder's parts besides map.h5 and manifest.json
# The manifest's ``points_order`` of maps whose points are sorted by landmark and, within one, by
# the number of map images observing them (most first); maps without it are sorted by landmark only.
POINTS_ORDER = "landmark, observations"


@dataclass
class LandmarkMap:
    """Everything localization needs, in memory.

    Points are sorted by landmark: landmark ``l`` owns points
    ``landmark_offsets[l]:landmark_offsets[l + 1]``.

    - ``xyz`` (P, 3) float32 world coordinates; ``descriptors`` (P, D) float32 as
      ``descriptor_spec`` declares (the extractor's; it also says how they are stored);
      ``point_landmark`` (P,) int64; ``color`` (P, 3) uint8.
    - ``image_names`` (M,), ``cameras`` (M,) :class:`Camera`, ``poses`` (M,) :class:`Pose`
      world-to-camera; ``image_offsets`` (M + 1,) and ``image_points`` (O,): map image ``i``
      observes points ``image_points[image_offsets[i]:image_offsets[i + 1]]``, at the
      pixels ``image_keypoints`` (O, 2) float32 (keypoint convention).
    - ``landmark_centers`` (L, 3).
    - ``retrieval``: the arrays of the retrieval index (:meth:`GlobalIndex.to_arrays`,
      rows = map images) of the method named by ``manifest["retrieval"]["method"]``.
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
    image_keypoints: np.ndarray
    landmark_centers: np.ndarray
    retrieval: dict[str, np.ndarray] = field(default_factory=dict)
    descriptor_spec: DescriptorSpec = LEGACY_ROOTSIFT
    manifest: dict = field(default_factory=dict)
    path: Path | None = None
    tracks: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False)

    @property
    def num_landmarks(self) -> int:
        return len(self.landmark_centers)

    @property
    def landmark_offsets(self) -> np.ndarray:
        return np.searchsorted(self.point_landmark, np.arange(self.num_landmarks + 1))

    def image_point_ids(self, i: int) -> np.ndarray:
        return self.image_points[self.image_offsets[i]:self.image_offsets[i + 1]].astype(np.int64)

    def point_track_offsets(self) -> np.ndarray:
        """(P + 1,) offsets of each point's observing images in the stored tracks (``diff``:
        how many map images observe each point)."""
        if self.tracks is None:
            from .schema import point_tracks

            self.tracks = point_tracks(np.asarray(self.image_points), self.image_offsets, len(self.xyz))
        return np.asarray(self.tracks[0], np.int64)

    def point_images(self, points: np.ndarray) -> np.ndarray:
        """The map images observing ``points``, one entry per observation (an image observing
        several of them appears as often). Uses the stored tracks (``points/track_*``),
        computed once from the observations for maps written without them."""
        if self.tracks is None:
            from .schema import point_tracks

            self.tracks = point_tracks(np.asarray(self.image_points), self.image_offsets, len(self.xyz))
        offsets, images = self.tracks
        points = np.asarray(points, np.int64)
        starts, ends = offsets[points].astype(np.int64), offsets[points + 1].astype(np.int64)
        if not len(points):
            return np.zeros(0, np.int64)
        idx = np.repeat(starts - np.cumsum(np.r_[0, (ends - starts)[:-1]]), ends - starts) + np.arange((ends - starts).sum())
        return np.asarray(images[idx], np.int64)

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
    if m.image_keypoints.shape != (len(m.image_points), 2):
        problems.append("observation keypoints and points of different lengths")
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
