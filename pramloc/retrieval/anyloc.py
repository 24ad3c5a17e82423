"""AnyLoc (Keetha et al., RA-L 2023): VLAD over a dense backbone's features, no training.

The vocabulary is k-means (``retrieval.dense_words`` words) on the dense features of the
map images themselves (AnyLoc's "map-specific" vocabulary); each image's features
(h * w, D) are hard-assigned to their nearest word and aggregated as VLAD with
intra-normalisation and power normalisation (:func:`.vlad.vlad`); the (K * D,) vectors are
PCA-whitened to ``retrieval.dim`` when given (at most the number of map images - 1; on
the maps measured whitening lowered recall, see docs/BENCHMARKS.md) and L2-normalised.
The backbone (``retrieval.backbone``) is XFeat's 64-D map by default; AnyLoc's own is
DINOv2's value facet, here a DINOv2 checkpoint file's patch tokens (``backbone=dinov2``).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .base import RetrievalInput, register
from .dense import DenseIndex
from .vlad import build_vocabulary, vlad


@register("anyloc")
class AnyLocIndex(DenseIndex):
    """Hard-assignment VLAD over dense features, PCA-whitened. ``vocabulary`` (K, D)."""

    vocabulary = np.zeros((0, 0), np.float32)

    def fit_model(self, feats: Sequence[np.ndarray]) -> None:
        self.vocabulary = build_vocabulary([f.reshape(-1, f.shape[-1]) for f in feats], self.settings.dense_words,
                                           seed=self.settings.seed)

    def aggregate(self, feats: np.ndarray, item: RetrievalInput) -> np.ndarray:
        """VLAD (K * D,) of the features (h, w, D)."""
        return vlad(feats.reshape(-1, feats.shape[-1]), self.vocabulary)

    def model_arrays(self) -> dict[str, np.ndarray]:
        return {"vocabulary": self.vocabulary}

    def load_model(self, arrays: dict) -> None:
        self.vocabulary = np.asarray(arrays["vocabulary"], np.float32)
