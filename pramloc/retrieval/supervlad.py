"""SuperVLAD (Lu et al., NeurIPS 2024): VLAD without cluster centres, few clusters, ghost
clusters, over a dense backbone; trained per map.

A feature x (D,) is softly assigned to ``retrieval.clusters`` + ``retrieval.ghost_clusters``
clusters by a linear layer and a softmax; the image vector is, per real cluster, the
assignment-weighted *sum of the features* (no residuals to centres: the aggregation does
not depend on centres that drift between domains), intra-normalised and L2-normalised:
(K * D,). The ghost clusters' assignments are dropped (they absorb uninformative
features). The layer starts from k-means on the map images' features (as NetVLAD's
initialisation) and is trained on the map images themselves: the positives of an image
are the map images sharing at least ``POSITIVE`` of its observed 3D points (co-visibility,
no labels), the negatives those sharing less than ``NEGATIVE``; InfoNCE loss, the backbone
frozen, ``retrieval.train_steps`` steps of Adam (seconds on a CPU).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import logger
from .backbones import dense_features
from .base import RetrievalInput, as_input, register
from .dense import DenseIndex, Settings
from .vlad import build_vocabulary

POSITIVE = 0.3     # share of the smaller image's points seen by both
NEGATIVE = 0.05
CELLS = 1024       # features sampled per image and training step
BATCH = 16         # anchors per step
TEMPERATURE = 0.07
ALPHA = 10.0       # initial assignment sharpness


class SuperVladHead(nn.Module):
    """Soft assignment of features (B, N, D) to K + G clusters; :meth:`forward` -> (B, K * D)."""

    def __init__(self, dim: int, clusters: int, ghosts: int):
        super().__init__()
        self.clusters = clusters
        self.assign = nn.Linear(dim, clusters + ghosts)

    def init_from_centres(self, centres: torch.Tensor) -> None:
        """NetVLAD's initialisation from centres (K + G, D): logits ~ -ALPHA |x - c|^2."""
        with torch.no_grad():
            self.assign.weight.copy_(2 * ALPHA * centres)
            self.assign.bias.copy_(-ALPHA * (centres ** 2).sum(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.softmax(self.assign(x), dim=-1)[..., : self.clusters]  # (B, N, K), ghosts dropped
        v = torch.einsum("bnk,bnd->bkd", a, x)                           # (B, K, D)
        return F.normalize(F.normalize(v, dim=-1).flatten(1), dim=-1)


def covisibility(points: Sequence[np.ndarray]) -> np.ndarray:
    """(M, M): the share of the smaller image's observed points (ids, one array per image)
    that both images observe."""
    ids = np.unique(np.concatenate([np.asarray(p, np.int64) for p in points])) if points else np.zeros(0)
    a = np.zeros((len(points), len(ids)), np.float32)
    for i, p in enumerate(points):
        a[i, np.searchsorted(ids, np.unique(p))] = 1
    n = a.sum(1)
    return (a @ a.T) / np.maximum(np.minimum(n[:, None], n[None]), 1)


@register("supervlad")
class SuperVladIndex(DenseIndex):
    """SuperVLAD vectors of the map images (M, K * D) float16 and the assignment layer."""

    needs = ("image", "points")

    def __init__(self, settings: Settings):
        super().__init__(settings)
        self.head: SuperVladHead | None = None

    @property
    def use_pca(self) -> bool:
        return False

    @classmethod
    def fit(cls, items: Sequence[RetrievalInput], conf) -> "SuperVladIndex":
        index = cls(Settings({**Settings.of(conf).__dict__, "clusters": conf.clusters,
                              "ghost_clusters": conf.ghost_clusters}))
        items = [as_input(i) for i in items]
        points = [i.require("points", "supervlad") for i in items]
        feats = [f.reshape(-1, f.shape[-1]) for f in (dense_features(i, index.settings) for i in items)]
        k, g = conf.clusters, conf.ghost_clusters
        torch.manual_seed(conf.seed)
        index.head = SuperVladHead(feats[0].shape[-1], k, g)
        index.head.init_from_centres(torch.from_numpy(build_vocabulary(feats, k + g, seed=conf.seed)))
        index._train(feats, covisibility(points), conf.train_steps, conf.seed)
        index.vectors = np.stack([index._vector(f) for f in feats]).astype(np.float16)
        return index

    def _train(self, feats: list[np.ndarray], covis: np.ndarray, steps: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        pos = covis >= POSITIVE
        np.fill_diagonal(pos, False)
        anchors = np.flatnonzero(pos.any(1))
        if steps <= 0 or len(anchors) < 2:
            logger.info("supervlad: %d map images with a co-visible positive; the layer stays at its "
                        "k-means initialisation.", len(anchors))
            return
        neg = covis < NEGATIVE
        opt = torch.optim.Adam(self.head.parameters(), lr=1e-2)

        def sample(i: int) -> torch.Tensor:
            f = feats[i]
            return torch.from_numpy(f[rng.choice(len(f), min(CELLS, len(f)), replace=False)])

        for _ in range(steps):
            a = rng.choice(anchors, min(BATCH, len(anchors)), replace=False)
            p = np.array([rng.choice(np.flatnonzero(pos[i])) for i in a])
            imgs = np.concatenate([a, p])
            n = min(len(f) for f in feats)
            v = self.head(torch.stack([sample(i)[: min(CELLS, n)] for i in imgs]))  # (2B, G)
            va, vb = v[: len(a)], v[len(a):]
            logits = va @ vb.T / TEMPERATURE  # anchor x (positives of every anchor)
            # Another anchor's positive counts as a negative only when it is one for this anchor.
            mask = torch.from_numpy(~neg[np.ix_(a, p)])
            mask.fill_diagonal_(False)
            logits = logits.masked_fill(mask, float("-inf"))
            loss = F.cross_entropy(logits, torch.arange(len(a)))
            opt.zero_grad()
            loss.backward()
            opt.step()

    def _vector(self, feats: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self.head(torch.from_numpy(np.ascontiguousarray(feats, np.float32))[None])[0].numpy()

    def aggregate(self, feats: np.ndarray, item: RetrievalInput) -> np.ndarray:
        return self._vector(feats.reshape(-1, feats.shape[-1]))

    def model_arrays(self) -> dict[str, np.ndarray]:
        return {"assign_weight": self.head.assign.weight.detach().numpy(),
                "assign_bias": self.head.assign.bias.detach().numpy()}

    def load_model(self, arrays: dict) -> None:
        w = torch.from_numpy(np.asarray(arrays["assign_weight"], np.float32))
        self.head = SuperVladHead(w.shape[1], int(self.settings.clusters), w.shape[0] - int(self.settings.clusters))
        with torch.no_grad():
            self.head.assign.weight.copy_(w)
            self.head.assign.bias.copy_(torch.from_numpy(np.asarray(arrays["assign_bias"], np.float32)))
