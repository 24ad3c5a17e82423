"""The extractor contract: what an extractor declares about its descriptors
(:class:`DescriptorSpec`) and what it returns (:class:`Features`).

Every stage that touches descriptors reads the declaration instead of assuming RootSIFT:
map storage quantises with :meth:`DescriptorSpec.quantize` / :meth:`DescriptorSpec.dequantize`
(``pramloc/mapio/schema.py``), the recognizer's augmentation projects noisy descriptors back
with :meth:`DescriptorSpec.project` (``pramloc/recognition/data.py``); matching (Euclidean
distances), the medoid descriptor of a point (``pramloc/landmarks.py``) and VLAD (signed
residuals) hold for any real-valued descriptor of the declared dimension.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np

from ..errors import PramlocError

NORMS = ("l2", "none")
STORAGE = {"uint8": (0, 255), "int8": (-127, 127), "float16": None}


@dataclass(frozen=True)
class DescriptorSpec:
    """What an extractor's descriptors are and how a map stores them.

    - ``dim``: D, the descriptor length.
    - ``signed``: whether components can be negative (False: all >= 0, e.g. RootSIFT).
    - ``norm``: ``"l2"`` (unit length) or ``"none"``.
    - ``storage``: dtype in ``map.h5`` (``uint8`` unsigned only, ``int8``, ``float16``);
      ``scale``: stored value = ``round(x * scale)``, clipped to the dtype's range
      (ignored for float16). Choose it so that clipping is rare for real descriptors.
    """

    dim: int
    signed: bool
    norm: str = "l2"
    storage: str = "uint8"
    scale: float = 512.0

    def __post_init__(self):
        if self.dim < 1:
            raise PramlocError(f"descriptor spec: dim must be >= 1, got {self.dim}")
        if self.norm not in NORMS:
            raise PramlocError(f"descriptor spec: unknown norm {self.norm!r} (known: {', '.join(NORMS)})")
        if self.storage not in STORAGE:
            raise PramlocError(f"descriptor spec: unknown storage {self.storage!r} (known: {', '.join(STORAGE)})")
        if self.signed and self.storage == "uint8":
            raise PramlocError("descriptor spec: signed descriptors cannot be stored as uint8 (use int8 or float16)")
        if self.scale <= 0:
            raise PramlocError(f"descriptor spec: scale must be > 0, got {self.scale}")

    # ---------------------------------------------------------------- values
    def project(self, desc: np.ndarray) -> np.ndarray:
        """Bring arbitrary vectors (N, D) back into the descriptor space: clip at 0 if
        unsigned, L2-normalise if ``norm == "l2"`` (used after adding noise)."""
        desc = np.asarray(desc, dtype=np.float32)
        if not self.signed:
            desc = np.maximum(desc, 0)
        if self.norm == "l2":
            desc = desc / np.maximum(np.linalg.norm(desc, axis=1, keepdims=True), np.float32(1e-8))
        return desc.astype(np.float32, copy=False)

    def quantize(self, desc: np.ndarray) -> np.ndarray:
        """Descriptors (N, D) float -> (N, D) of ``storage`` dtype."""
        desc = np.asarray(desc, dtype=np.float32)
        if self.storage == "float16":
            return desc.astype(np.float16)
        lo, hi = STORAGE[self.storage]
        return np.clip(np.round(desc * self.scale), lo, hi).astype(self.storage)

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        """Stored (N, D) -> float32 (N, D), re-normalised if ``norm == "l2"`` (the storage
        scale then cancels out: localization dequantizes the points it matches per query)."""
        d = np.asarray(q, dtype=np.float32)
        if self.norm == "l2":
            return d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), np.float32(1e-8))
        return d if self.storage == "float16" else d / np.float32(self.scale)

    def bytes_per_descriptor(self) -> int:
        return self.dim * np.dtype(self.storage).itemsize

    # ---------------------------------------------------------------- checks
    def check(self, desc: np.ndarray, what: str = "descriptors") -> None:
        """Raise :class:`PramlocError` unless ``desc`` (N, D) fits this declaration
        (dimension, finite, sign, unit norm)."""
        if desc.ndim != 2 or desc.shape[1] != self.dim:
            raise PramlocError(f"{what}: expected shape (N, {self.dim}), got {tuple(desc.shape)}")
        if not len(desc):
            return
        if not np.all(np.isfinite(desc)):
            raise PramlocError(f"{what}: NaN or infinite values")
        if not self.signed and desc.min() < 0:
            raise PramlocError(f"{what}: negative values in descriptors declared unsigned")
        if self.norm == "l2" and not np.allclose(np.linalg.norm(desc, axis=1), 1, atol=1e-3):
            raise PramlocError(f"{what}: descriptors declared unit-norm are not")

    # ---------------------------------------------------------------- (de)serialisation
    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> "DescriptorSpec":
        try:
            return cls(**json.loads(text))
        except (TypeError, ValueError) as err:
            raise PramlocError(f"descriptor spec: cannot read {text!r} ({err})") from None


# Maps written before the declaration existed hold RootSIFT stored this way.
LEGACY_ROOTSIFT = DescriptorSpec(dim=128, signed=False, norm="l2", storage="uint8", scale=512.0)


@dataclass
class Features:
    """What an extractor's ``extract`` returns, in the pixels of the image it was given.

    - ``keypoints`` (N, 2) float32, ``(x, y)`` with the centre of the top-left pixel at
      (0, 0) (hloc's convention), sorted by decreasing score;
    - ``scores`` (N,) float32, larger = stronger;
    - ``descriptors`` (N, D) float32, as declared by the extractor's ``SPEC``.
    """

    keypoints: np.ndarray
    scores: np.ndarray
    descriptors: np.ndarray

    def __post_init__(self):
        self.keypoints = np.asarray(self.keypoints, dtype=np.float32).reshape(-1, 2)
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        self.descriptors = np.asarray(self.descriptors, dtype=np.float32)
        n = len(self.keypoints)
        if len(self.scores) != n or self.descriptors.ndim != 2 or len(self.descriptors) != n:
            raise PramlocError(f"features: keypoints {self.keypoints.shape}, scores {self.scores.shape} and "
                               f"descriptors {self.descriptors.shape} disagree (expected (N, 2), (N,), (N, D))")

    def __len__(self) -> int:
        return len(self.keypoints)

    @classmethod
    def empty(cls, dim: int) -> "Features":
        return cls(np.zeros((0, 2), np.float32), np.zeros((0,), np.float32), np.zeros((0, dim), np.float32))

    def strongest(self, k: int | None) -> "Features":
        """The ``k`` strongest (all if ``k`` is None), sorted by decreasing score (stable)."""
        order = np.argsort(-self.scores, kind="stable")[: (k or len(self))]
        return Features(self.keypoints[order], self.scores[order], self.descriptors[order])
