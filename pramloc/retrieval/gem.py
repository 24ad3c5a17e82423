"""GeM (generalized-mean pooling, Radenovic et al. 2018) over a dense backbone: the simple
baseline of the dense global descriptors, no vocabulary and no training.

The backbones' features are signed, and GeM pools non-negative activations: each
channel's positive and negative parts are pooled apart, ``(mean(max(x, eps)^p))^(1/p)``
with ``p = retrieval.gem_p`` (3, as in the papers) over the (h * w) cells, giving (2 D,),
then L2-normalised (no PCA).
"""

from __future__ import annotations

import numpy as np

from .base import RetrievalInput, register
from .dense import DenseIndex

EPS = 1e-6


def gem(values: np.ndarray, p: float) -> np.ndarray:
    """GeM of non-negative ``values`` (N, D) over N: (D,)."""
    return np.mean(np.maximum(values, EPS) ** p, axis=0) ** (1.0 / p)


@register("gem")
class GemIndex(DenseIndex):
    """GeM of the dense features' positive and negative parts: (2 D,) unit vectors."""

    @property
    def use_pca(self) -> bool:
        return False

    def aggregate(self, feats: np.ndarray, item: RetrievalInput) -> np.ndarray:
        x = feats.reshape(-1, feats.shape[-1]).astype(np.float64)
        p = float(self.settings.gem_p)
        return np.concatenate([gem(x, p), gem(-x, p)]).astype(np.float32)
