"""Training data of the landmark recognizer: labelled keypoints of the map images, the
train/val split, viewpoint augmentation and batching of variable-length keypoint sets.

Coordinates fed to the network are *normalised*: centred on the image centre and divided
by half the longest side, so that the long side spans [-1, 1] and the aspect ratio is
kept (see :func:`normalize_keypoints`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import PramlocError
from ..features.base import DescriptorSpec

IGNORE_INDEX = -100  # label of padding tokens (ignored by the loss)


@dataclass
class TrainingImage:
    """Keypoints of one map image with their landmark labels.

    - ``keypoints`` (N, 2) float32: pixels of the original image (hloc convention).
    - ``descriptors`` (N, D) float32, as the extractor's :class:`DescriptorSpec` declares
      (RootSIFT: D = 128, >= 0; XFeat: D = 64, signed).
    - ``labels`` (N,) int64: 0 = background, ``l + 1`` = landmark ``l``.
    - ``image_size``: (W, H) of the original image.
    - ``points_xy`` (M, 2) float32 pixels and ``points_landmark`` (M,) int64, optional: the
      map points visible in the image (targets of the landmark-visibility head; without
      them the image teaches the keypoint labels only).
    """

    name: str
    keypoints: np.ndarray
    descriptors: np.ndarray
    labels: np.ndarray
    image_size: tuple[int, int]
    points_xy: np.ndarray | None = None
    points_landmark: np.ndarray | None = None

    def __post_init__(self):
        self.keypoints = np.asarray(self.keypoints, dtype=np.float32)
        self.descriptors = np.asarray(self.descriptors, dtype=np.float32)
        self.labels = np.asarray(self.labels)
        self.image_size = tuple(int(v) for v in np.asarray(self.image_size).reshape(-1))
        check_inputs(self.keypoints, self.descriptors, self.image_size, what=f"training image {self.name!r}")
        if self.labels.shape != (len(self.keypoints),):
            raise PramlocError(f"training image {self.name!r}: labels have shape {self.labels.shape}, "
                               f"expected ({len(self.keypoints)},) (one per keypoint)")
        if self.labels.size and not np.issubdtype(self.labels.dtype, np.integer):
            raise PramlocError(f"training image {self.name!r}: labels must be integers, got {self.labels.dtype}")
        self.labels = self.labels.astype(np.int64)
        if self.labels.size and self.labels.min() < 0:
            raise PramlocError(f"training image {self.name!r}: negative label {self.labels.min()} "
                               "(0 = background, l + 1 = landmark l)")
        if (self.points_xy is None) != (self.points_landmark is None):
            raise PramlocError(f"training image {self.name!r}: give both points_xy and points_landmark, or neither")
        if self.points_xy is not None:
            self.points_xy = np.asarray(self.points_xy, np.float32).reshape(-1, 2)
            self.points_landmark = np.asarray(self.points_landmark).astype(np.int64).reshape(-1)
            if len(self.points_xy) != len(self.points_landmark) or (
                    self.points_landmark.size and self.points_landmark.min() < 0):
                raise PramlocError(f"training image {self.name!r}: points_xy and points_landmark must be "
                                   "(M, 2) and (M,) with landmark ids >= 0")

    def __len__(self) -> int:
        return len(self.keypoints)


def check_inputs(keypoints: np.ndarray, descriptors: np.ndarray, image_size, what: str = "input",
                 dim: int | None = None) -> None:
    """Raise :class:`PramlocError` unless keypoints (N, 2), descriptors (N, D) and
    image_size (W, H) are consistent, finite and (if given) D == ``dim``."""
    if keypoints.ndim != 2 or keypoints.shape[1] != 2:
        raise PramlocError(f"{what}: keypoints must have shape (N, 2), got {tuple(keypoints.shape)}")
    if descriptors.ndim != 2 or descriptors.shape[0] != keypoints.shape[0]:
        raise PramlocError(f"{what}: descriptors must have shape (N, D) with N = {keypoints.shape[0]} "
                           f"keypoints, got {tuple(descriptors.shape)}")
    if dim is not None and descriptors.shape[1] != dim:
        raise PramlocError(f"{what}: descriptors have dimension {descriptors.shape[1]}, the recognizer "
                           f"expects {dim}")
    size = np.asarray(image_size).reshape(-1)
    if size.shape != (2,) or not np.all(np.isfinite(size)) or np.any(size <= 0):
        raise PramlocError(f"{what}: image_size must be (W, H) with positive values, got {image_size!r}")
    if not (np.all(np.isfinite(keypoints)) and np.all(np.isfinite(descriptors))):
        raise PramlocError(f"{what}: keypoints or descriptors contain NaN or infinite values")


def check_training_images(images: list[TrainingImage], num_landmarks: int) -> int:
    """Validate the training set against ``num_landmarks``; returns the descriptor dimension."""
    if num_landmarks < 1:
        raise PramlocError(f"recognizer training: num_landmarks must be >= 1, got {num_landmarks}")
    if not images:
        raise PramlocError("recognizer training: no training images")
    dims = {im.descriptors.shape[1] for im in images}
    if len(dims) != 1:
        raise PramlocError(f"recognizer training: descriptors of different dimensions {sorted(dims)}")
    labelled = 0
    for im in images:
        if not isinstance(im, TrainingImage):
            raise PramlocError(f"recognizer training: expected TrainingImage, got {type(im).__name__}")
        if im.labels.size and im.labels.max() > num_landmarks:
            raise PramlocError(f"training image {im.name!r}: label {im.labels.max()} out of range for "
                               f"{num_landmarks} landmarks (labels are 0..{num_landmarks})")
        labelled += int((im.labels > 0).sum())
        if im.points_landmark is not None and im.points_landmark.size and im.points_landmark.max() >= num_landmarks:
            raise PramlocError(f"training image {im.name!r}: visible point of landmark {im.points_landmark.max()} "
                               f"out of range for {num_landmarks} landmarks")
    if labelled == 0:
        raise PramlocError("recognizer training: no keypoint is labelled with a landmark (all background)")
    return dims.pop()


def normalize_keypoints(keypoints: np.ndarray, image_size) -> np.ndarray:
    """Pixels (N, 2) -> (N, 2) centred on the image centre, long side in [-1, 1]."""
    w, h = (float(v) for v in np.asarray(image_size).reshape(-1))
    center = np.array([(w - 1) / 2, (h - 1) / 2], dtype=np.float32)
    return ((keypoints - center) / (max(w, h) / 2)).astype(np.float32)


def split_train_val(images: list[TrainingImage], val_fraction: float, seed: int
                    ) -> tuple[list[TrainingImage], list[TrainingImage]]:
    """Hold out ``round(val_fraction * n)`` images (at least 1 if the fraction is > 0 and
    n >= 2), chosen by a seeded permutation; the rest keeps its order."""
    n = len(images)
    n_val = min(max(int(round(val_fraction * n)), 1 if val_fraction > 0 and n >= 2 else 0), n - 1)
    if n_val <= 0:
        return list(images), []
    val_idx = set(np.random.default_rng(seed).permutation(n)[:n_val].tolist())
    return ([im for i, im in enumerate(images) if i not in val_idx],
            [im for i, im in enumerate(images) if i in val_idx])


@dataclass
class View:
    """One (augmented) view of an image: normalised coords (N, 2), descriptors (N, D),
    labels (N,), and the landmark ids (M,) of the map points visible in the view (None if
    unknown)."""

    xy: np.ndarray
    descriptors: np.ndarray
    labels: np.ndarray
    point_landmarks: np.ndarray | None = None


def plain_view(image: TrainingImage, max_keypoints: int | None = None) -> View:
    """The image as the recognizer sees it at test time (first ``max_keypoints`` keypoints)."""
    n = len(image) if not max_keypoints else min(len(image), max_keypoints)
    return View(normalize_keypoints(image.keypoints[:n], image.image_size), image.descriptors[:n], image.labels[:n],
                image.points_landmark)


def visibility_targets(views: list[View], num_landmarks: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets of the visibility head: (B, L) share of each landmark among the map points
    visible in each view, and (B,) bool, True where the view has visible points."""
    target = np.zeros((len(views), num_landmarks), np.float32)
    for i, v in enumerate(views):
        if v.point_landmarks is not None and len(v.point_landmarks):
            target[i] = np.bincount(v.point_landmarks, minlength=num_landmarks)[:num_landmarks]
    total = target.sum(1, keepdims=True)
    return torch.from_numpy(target / np.maximum(total, 1)), torch.from_numpy(total[:, 0] > 0)


def augmented_view(image: TrainingImage, rng: np.random.Generator, conf: dict,
                   num_keypoints: int | None = None, spec: DescriptorSpec | None = None) -> View:
    """A random new viewpoint of ``image``, on normalised coordinates:

    1. random affine of the frame (zoom ``exp(U(-scale, scale))``, rotation ``U(-rotation,
       rotation)`` degrees, anisotropy ``exp(U(-aspect, aspect))``, shift ``U(-shift, shift)``),
       then the keypoints that leave the original frame are cropped (unless too few remain);
    2. a random subset of ``num_keypoints`` keypoints (default ``U(min_keypoints, max_keypoints)``),
       all of them if fewer;
    3. Gaussian coordinate jitter (std ``jitter``, normalised units);
    4. Gaussian descriptor noise (std ``U(0, descriptor_noise)``), projected back into the
       descriptor space by ``spec`` (:meth:`DescriptorSpec.project`: clipped at 0 only for
       unsigned descriptors, L2-normalised for unit-norm ones; default: :func:`infer_spec`).
    """
    xy = normalize_keypoints(image.keypoints, image.image_size)
    w, h = image.image_size
    half = np.array([w, h], dtype=np.float32) / max(w, h)  # frame half-extent in normalised units

    zoom = np.exp(rng.uniform(-conf["scale"], conf["scale"]))
    aspect = np.exp(rng.uniform(-conf["aspect"], conf["aspect"]))
    angle = np.deg2rad(rng.uniform(-conf["rotation"], conf["rotation"]))
    c, s = np.cos(angle), np.sin(angle)
    A = (np.array([[c, -s], [s, c]]) @ np.diag([zoom * aspect, zoom / aspect])).astype(np.float32)
    shift = rng.uniform(-conf["shift"], conf["shift"], size=2).astype(np.float32)
    xy = xy @ A.T + shift
    inside = np.flatnonzero(np.all(np.abs(xy) <= half, axis=1))
    points = image.points_landmark
    if len(inside) >= max(conf["min_keypoints"], 1):
        if points is not None:  # the visible points that stay in the cropped frame
            pxy = normalize_keypoints(image.points_xy, image.image_size) @ A.T + shift
            points = points[np.all(np.abs(pxy) <= half, axis=1)]
    else:  # crop would leave too little: keep the transform, skip the crop
        inside = np.arange(len(xy))

    if num_keypoints is None:
        num_keypoints = int(rng.integers(conf["min_keypoints"], conf["max_keypoints"] + 1))
    keep = inside[rng.permutation(len(inside))[:num_keypoints]]
    xy, desc, labels = xy[keep], image.descriptors[keep], image.labels[keep]

    xy = xy + conf["jitter"] * rng.standard_normal(xy.shape, dtype=np.float32)
    sigma = rng.uniform(0, conf["descriptor_noise"])
    if sigma > 0 and len(desc):
        spec = spec or infer_spec(image.descriptors)
        desc = spec.project(desc + np.float32(sigma) * rng.standard_normal(desc.shape, dtype=np.float32))
    return View(xy.astype(np.float32), desc.astype(np.float32), labels, points)


def infer_spec(descriptors: np.ndarray) -> DescriptorSpec:
    """A declaration read off descriptors (N, D) when none is given: signed if any
    component is negative, unit-norm if every row is."""
    d = np.asarray(descriptors, dtype=np.float32)
    signed = bool(d.size and d.min() < 0)
    unit = bool(len(d) and np.allclose(np.linalg.norm(d, axis=1), 1, atol=1e-3))
    return DescriptorSpec(dim=max(d.shape[-1], 1), signed=signed, norm="l2" if unit else "none",
                          storage="int8" if signed else "uint8")


def collate(views: list[View]) -> dict[str, torch.Tensor]:
    """Pad views to the longest: ``xy`` (B, N, 2), ``descriptors`` (B, N, D), ``labels``
    (B, N) with :data:`IGNORE_INDEX` on padding, ``mask`` (B, N) bool, True = real keypoint."""
    b, n = len(views), max(max(len(v.xy) for v in views), 1)
    d = views[0].descriptors.shape[1]
    xy = np.zeros((b, n, 2), np.float32)
    desc = np.zeros((b, n, d), np.float32)
    labels = np.full((b, n), IGNORE_INDEX, np.int64)
    mask = np.zeros((b, n), bool)
    for i, v in enumerate(views):
        k = len(v.xy)
        xy[i, :k], desc[i, :k], labels[i, :k], mask[i, :k] = v.xy, v.descriptors, v.labels, True
    return {"xy": torch.from_numpy(xy), "descriptors": torch.from_numpy(desc),
            "labels": torch.from_numpy(labels), "mask": torch.from_numpy(mask)}
