"""What the global descriptors over a dense backbone share (:mod:`.backbones`): the
backbone settings they were fitted with (stored with the index: a query is described
the same way), an optional PCA whitening, the map images' vectors in float16 and search
by dot product. A method subclasses :class:`DenseIndex` with its aggregation."""

from __future__ import annotations

import json
from typing import Sequence

import numpy as np

from ..errors import PramlocError
from .backbones import dense_features
from .base import GlobalIndex, RetrievalInput, as_input

# RetrievalConfig keys a dense index keeps: they decide how an image is described.
SETTINGS = ("backbone", "max_side", "weights", "device", "dense_words", "dim", "whiten", "gem_p", "seed")
WHITENING_EPS = 1e-6  # relative to the largest variance: directions of no variance are not blown up


class Settings:
    """The backbone settings of a dense index (attribute access, as a RetrievalConfig)."""

    def __init__(self, values: dict):
        self.__dict__.update(values)

    @classmethod
    def of(cls, conf) -> "Settings":
        return cls({k: getattr(conf, k) for k in SETTINGS})

    def to_array(self) -> np.ndarray:
        return np.frombuffer(json.dumps(self.__dict__, sort_keys=True).encode(), np.uint8).copy()

    @classmethod
    def from_array(cls, a: np.ndarray) -> "Settings":
        return cls(json.loads(np.asarray(a, np.uint8).tobytes().decode()))


def fit_pca(vectors: np.ndarray, dim: int | None, whiten: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """PCA of ``vectors`` (M, G): mean (G,) and projection (d, G), the d = min(dim, M - 1, G)
    principal directions, each scaled by 1 / sqrt(its variance) when ``whiten``. ``dim``
    None: no PCA (mean and projection are empty)."""
    x = np.asarray(vectors, np.float64)
    if dim is None or len(x) < 2:
        return np.zeros(0, np.float32), np.zeros((0, x.shape[1]), np.float32)
    mean = x.mean(0)
    _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
    var = s ** 2 / (len(x) - 1)
    d = int(min(dim, len(x) - 1, x.shape[1]))
    proj = vt[:d] / np.sqrt(var[:d] + WHITENING_EPS * var[0])[:, None] if whiten else vt[:d]
    return mean.astype(np.float32), proj.astype(np.float32)


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / max(float(np.linalg.norm(v)), 1e-12)).astype(np.float32)


class DenseIndex(GlobalIndex):
    """Vectors of the map images from their dense features.

    Subclasses define :meth:`fit_model` (the vocabulary or weights, from the map images'
    features), :meth:`aggregate` (features (h, w, D) -> raw vector (G0,)), and store their
    model in :meth:`model_arrays` / read it in :meth:`load_model`. Raw vectors are
    PCA-whitened (when fitted with ``dim``) and L2-normalised: unit vectors (G,).
    """

    needs = ("image",)

    def __init__(self, settings: Settings):
        self.settings = settings
        self.mean = np.zeros(0, np.float32)
        self.projection = np.zeros((0, 0), np.float32)
        self.vectors = np.zeros((0, 0), np.float16)

    # -- what a method defines
    def fit_model(self, feats: Sequence[np.ndarray]) -> None:
        """Learn the aggregation's parameters from the map images' features (h_i, w_i, D)."""

    def aggregate(self, feats: np.ndarray, item: RetrievalInput) -> np.ndarray:
        raise NotImplementedError

    def model_arrays(self) -> dict[str, np.ndarray]:
        return {}

    def load_model(self, arrays: dict) -> None:
        pass

    @property
    def use_pca(self) -> bool:
        return True

    # -- shared
    @classmethod
    def fit(cls, items: Sequence[RetrievalInput], conf) -> "DenseIndex":
        index = cls(Settings.of(conf))
        items = [as_input(i) for i in items]
        feats = [dense_features(i, index.settings) for i in items]
        index.fit_model(feats)
        raw = np.stack([index.aggregate(f, i) for f, i in zip(feats, items)]) if items else np.zeros((0, 1))
        if index.use_pca:
            index.mean, index.projection = fit_pca(raw, index.settings.dim, index.settings.whiten)
        index.vectors = np.stack([index._finish(r) for r in raw]).astype(np.float16) if len(raw) else \
            np.zeros((0, 1), np.float16)
        return index

    def _finish(self, raw: np.ndarray) -> np.ndarray:
        if len(self.projection):
            raw = self.projection @ (raw - self.mean)
        return _unit(raw)

    def describe(self, item: RetrievalInput | np.ndarray) -> np.ndarray:
        """The unit vector (G,) of one image (its ``image`` is read)."""
        item = as_input(item)
        return self._finish(self.aggregate(dense_features(item, self.settings), item))

    def __len__(self) -> int:
        return len(self.vectors)

    @property
    def nbytes(self) -> int:
        """Bytes of the stored vectors (model excluded)."""
        return self.vectors.nbytes

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        q = np.asarray(query, np.float32)
        if q.shape[-1] != self.vectors.shape[1]:
            raise PramlocError(f"{self.method}: query vector has dimension {q.shape[-1]}, "
                               f"index has {self.vectors.shape[1]}")
        s = q @ np.asarray(self.vectors, np.float32).T
        k = max(0, min(int(k), len(self)))
        order = np.argsort(-s, axis=-1, kind="stable")[..., :k].astype(np.int64)
        return order, np.take_along_axis(s, order, axis=-1).astype(np.float32)

    def subset(self, rows: Sequence[int]) -> "DenseIndex":
        import copy

        index = copy.copy(self)
        index.vectors = np.asarray(self.vectors[np.asarray(rows, np.int64)])
        return index

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"settings": self.settings.to_array(), "mean": self.mean, "projection": self.projection,
                "vectors": self.vectors, **self.model_arrays()}

    @classmethod
    def from_arrays(cls, arrays: dict) -> "DenseIndex":
        try:
            index = cls(Settings.from_array(arrays["settings"]))
            index.mean = np.asarray(arrays["mean"], np.float32)
            index.projection = np.asarray(arrays["projection"], np.float32)
            index.vectors = np.asarray(arrays["vectors"])
            index.load_model(arrays)
        except KeyError as err:
            raise PramlocError(f"{cls.method}: stored index lacks {err.args[0]!r}") from None
        return index
