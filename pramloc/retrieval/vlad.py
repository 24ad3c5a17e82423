"""Image retrieval with VLAD (Jegou et al. 2010; Arandjelovic & Zisserman 2013).

A small visual vocabulary (k-means on local descriptors) turns an image's descriptors
(N, D) into one global vector (K * D,): per visual word the sum of the residuals of the
descriptors assigned to it, L2-normalised per word (intra-normalisation), signed square
root (power normalisation), then L2-normalised as a whole. Similar images have a large
dot product.

Storage: a :class:`VladIndex` keeps the map images' vectors in ``float16`` (2 bytes per
value, dot products within ~1e-3 of float32) or, for the smallest maps, in ``int8`` with
one float32 scale per image (1 byte per value, ~1e-2 error in the scores; the ranking of
clearly different images is unchanged). With K=16 words of 128-D RootSIFT one image costs
4 KiB in float16 and 2 KiB in int8.
"""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from ..errors import PramlocError
from .base import GlobalIndex, RetrievalInput, as_input, register

MAX_KMEANS_DESCRIPTORS = 100_000
STORAGE_DTYPES = ("float16", "int8")


def build_vocabulary(descriptors: np.ndarray | Sequence[np.ndarray], num_words: int, seed: int = 0,
                     max_descriptors: int = MAX_KMEANS_DESCRIPTORS) -> np.ndarray:
    """K-means (OpenCV, k-means++ seeding) on at most ``max_descriptors`` descriptors.

    descriptors: (N, D) float32 local descriptors of the map images, or one (N_i, D) array
    per image (the same sample is drawn from them without concatenating them all: a
    thousand photos' descriptors are never copied at once).
    Returns the visual words (K, D) float32. Deterministic for a given ``seed``.
    """
    parts = [np.asarray(descriptors)] if isinstance(descriptors, np.ndarray) else list(descriptors)
    if num_words < 1:
        raise PramlocError(f"vocabulary: num_words must be >= 1, got {num_words}")
    if not parts or any(d.ndim != 2 for d in parts):
        raise PramlocError(f"vocabulary: descriptors must be (N, D), got shape {parts[0].shape if parts else None}")
    sizes = np.array([len(d) for d in parts])
    total = int(sizes.sum())
    if total < num_words:
        raise PramlocError(f"vocabulary: {total} descriptors are too few for {num_words} words")
    if total > max_descriptors:
        keep = np.sort(np.random.default_rng(seed).choice(total, max_descriptors, replace=False))
        offsets = np.concatenate([[0], np.cumsum(sizes)])
        which = np.searchsorted(offsets, keep, side="right") - 1
        desc = np.concatenate([np.asarray(parts[i], np.float32)[keep[which == i] - offsets[i]]
                               for i in np.unique(which)])
    else:
        desc = np.concatenate([np.asarray(d, np.float32) for d in parts])
    desc = np.ascontiguousarray(desc)
    cv2.setRNGSeed(int(seed))
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 100, 1e-4)
    _, _, centers = cv2.kmeans(desc, int(num_words), None, criteria, 1, cv2.KMEANS_PP_CENTERS)
    return centers.astype(np.float32)


def vlad(descriptors: np.ndarray, vocabulary: np.ndarray) -> np.ndarray:
    """VLAD vector (K * D,) float32 of descriptors (N, D) for a vocabulary (K, D).

    Hard assignment to the nearest word, residual sums, intra-normalisation, signed
    square root, global L2 normalisation. Unit norm, or all zeros for an empty input.
    """
    words = np.asarray(vocabulary, dtype=np.float32)
    if words.ndim != 2:
        raise PramlocError(f"vlad: vocabulary must be (K, D), got shape {words.shape}")
    num_words, dim = words.shape
    desc = np.asarray(descriptors, dtype=np.float32)
    if desc.size == 0:
        return np.zeros(num_words * dim, np.float32)
    if desc.ndim != 2 or desc.shape[1] != dim:
        raise PramlocError(f"vlad: descriptors must be (N, {dim}) like the vocabulary, got shape {desc.shape}")
    # argmin_k ||x - c_k||^2 = argmin_k (|c_k|^2 - 2 x.c_k). cv2.gemm: single-threaded and
    # fast for these small products, where a threaded BLAS stalls on a busy machine.
    dots = cv2.gemm(np.ascontiguousarray(desc), words, 1.0, None, 0.0, flags=cv2.GEMM_2_T)
    assign = np.argmin((words * words).sum(1) - 2.0 * dots, axis=1)
    # Residual sums per word: sort by word, then one segmented sum over the non-empty words.
    counts = np.bincount(assign, minlength=num_words)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    used = counts > 0
    sums = np.zeros_like(words)
    sums[used] = np.add.reduceat(desc[np.argsort(assign, kind="stable")], starts[used], axis=0)
    residuals = sums - counts[:, None].astype(np.float32) * words  # (K, D)
    residuals /= np.maximum(np.linalg.norm(residuals, axis=1, keepdims=True), 1e-12)
    v = residuals.reshape(-1)
    v = np.sign(v) * np.sqrt(np.abs(v))
    return (v / max(float(np.linalg.norm(v)), 1e-12)).astype(np.float32)


@register("vlad")
class VladIndex(GlobalIndex):
    """Map images' VLAD vectors for nearest-neighbour search by dot product.

    vocabulary: (K, D) float32; vlads: (M, K * D) unit vectors (row i for map image i);
    storage: ``"float16"`` or ``"int8"`` (see the module docstring).
    """

    def __init__(self, vocabulary: np.ndarray, vlads: np.ndarray, storage: str = "float16"):
        self.vocabulary = np.asarray(vocabulary, dtype=np.float32)
        if self.vocabulary.ndim != 2:
            raise PramlocError(f"VladIndex: vocabulary must be (K, D), got shape {self.vocabulary.shape}")
        dim = self.vocabulary.size
        vlads = np.asarray(vlads, dtype=np.float32).reshape(-1, dim) if np.size(vlads) else np.zeros((0, dim))
        if storage not in STORAGE_DTYPES:
            raise PramlocError(f"VladIndex: unknown storage {storage!r} (known: {', '.join(STORAGE_DTYPES)})")
        self.storage = storage
        if storage == "int8":
            scale = np.abs(vlads).max(1) / 127.0 if len(vlads) else np.zeros(0)
            scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
            self.vectors = np.round(vlads / scale[:, None]).astype(np.int8)
            self.scales = scale
        else:
            self.vectors = vlads.astype(np.float16)
            self.scales = None

    @classmethod
    def build(cls, vocabulary: np.ndarray, descriptors: Sequence[np.ndarray],
              storage: str = "float16") -> "VladIndex":
        """Index from the local descriptors (N_i, D) of each map image."""
        vlads = np.stack([vlad(d, vocabulary) for d in descriptors]) if len(descriptors) else np.zeros((0,))
        return cls(vocabulary, vlads, storage)

    @classmethod
    def fit(cls, items: Sequence[RetrievalInput | np.ndarray], conf) -> "VladIndex":
        """Vocabulary of ``conf.num_words`` words (seed ``conf.seed``) on all the map images'
        local descriptors (N_i, D), then their vectors stored as ``conf.storage``."""
        descriptors = [as_input(i).require("descriptors", "vlad") for i in items]
        vocab = build_vocabulary(descriptors, conf.num_words, seed=conf.seed)
        return cls.build(vocab, descriptors, storage=conf.storage)

    def __len__(self) -> int:
        return len(self.vectors)

    @property
    def nbytes(self) -> int:
        """Bytes held by the stored vectors (and int8 scales), vocabulary excluded."""
        return self.vectors.nbytes + (self.scales.nbytes if self.scales is not None else 0)

    def describe(self, item: RetrievalInput | np.ndarray) -> np.ndarray:
        """The VLAD vector (K * D,) of a query's local descriptors (N, D) with this vocabulary."""
        return vlad(as_input(item).require("descriptors", "vlad"), self.vocabulary)

    def scores(self, query_vlad: np.ndarray) -> np.ndarray:
        """Dot products (M,) of one query vector (K * D,) with every map image (or (Q, M))."""
        q = np.asarray(query_vlad, dtype=np.float32)
        if q.shape[-1] != self.vectors.shape[1]:
            raise PramlocError(f"VladIndex: query vector has dimension {q.shape[-1]}, "
                               f"index has {self.vectors.shape[1]}")
        # In blocks of map images: a memory-mapped index of many images is never converted whole.
        block = 8192
        s = np.concatenate([q @ self.vectors[i:i + block].astype(np.float32).T
                            for i in range(0, max(len(self.vectors), 1), block)], axis=-1)
        if self.scales is not None:
            s = s * self.scales
        return s

    def search(self, query_vlad: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` most similar map images: indices (k,) int64 and scores (k,) float32,
        best first (``min(k, len(self))`` of them). A (Q, K * D) query gives (Q, k) arrays."""
        s = self.scores(query_vlad)
        k = max(0, min(int(k), len(self)))
        order = np.argsort(-s, axis=-1, kind="stable")[..., :k].astype(np.int64)
        return order, np.take_along_axis(s, order, axis=-1).astype(np.float32)

    def subset(self, rows: Sequence[int]) -> "VladIndex":
        rows = np.asarray(rows, np.int64)
        index = VladIndex.__new__(VladIndex)
        index.vocabulary, index.storage = self.vocabulary, self.storage
        index.vectors = np.asarray(self.vectors[rows])
        index.scales = None if self.scales is None else np.asarray(self.scales[rows])
        return index

    def extend(self, descriptors: Sequence[np.ndarray]) -> "VladIndex":
        """This index with the VLAD vectors of more map images (N_i, D each) appended, on the
        same vocabulary (rows already stored are kept as they are)."""
        added = VladIndex.build(self.vocabulary, descriptors, self.storage)
        index = VladIndex.__new__(VladIndex)
        index.vocabulary, index.storage = self.vocabulary, self.storage
        index.vectors = np.concatenate([np.asarray(self.vectors), added.vectors])
        index.scales = None if self.scales is None else np.concatenate([np.asarray(self.scales), added.scales])
        return index

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Arrays to store in a map file (HDF5/npz); :meth:`from_arrays` reads them back."""
        out = {"vocabulary": self.vocabulary, "vectors": self.vectors}
        if self.scales is not None:
            out["scales"] = self.scales
        return out

    @classmethod
    def from_arrays(cls, arrays: dict) -> "VladIndex":
        try:
            vocabulary = np.asarray(arrays["vocabulary"], dtype=np.float32)
            vectors = np.asarray(arrays["vectors"])
        except KeyError as err:
            raise PramlocError(f"VladIndex: stored index lacks {err.args[0]!r}") from None
        index = cls.__new__(cls)
        index.vocabulary = vocabulary
        if vectors.ndim != 2 or vectors.shape[1] != vocabulary.size:
            raise PramlocError(f"VladIndex: stored vectors {vectors.shape} do not match vocabulary "
                               f"{vocabulary.shape}")
        if vectors.dtype == np.int8:
            if "scales" not in arrays:
                raise PramlocError("VladIndex: stored int8 index lacks 'scales'")
            index.storage, index.vectors = "int8", vectors
            index.scales = np.asarray(arrays["scales"], dtype=np.float32).reshape(-1)
        else:
            index.storage, index.vectors, index.scales = "float16", vectors.astype(np.float16), None
        return index
