"""Landmark VLAD: SegVLAD's idea (Garg et al., "Revisit Anything", ECCV 2024: one VLAD per
image segment, images ranked by segment matches) with the map's 3D landmarks as the
segments.

An image's *regions*: for each landmark with at least ``MIN_KEYPOINTS`` labelled
keypoints, the dense-feature cells holding them grown by ``GROW`` cells on every side
(SegVLAD's neighbourhood expansion: a region carries some context), plus the whole
image. A map image's keypoints are labelled by the landmarks of the points it observes,
a query's by the recognizer (:class:`~.base.RetrievalInput` ``labels``). Each region is
described by VLAD over the dense backbone (hard assignment to ``retrieval.dense_words``
words from k-means on the map images, as :mod:`.anyloc`), projected by PCA to
``retrieval.region_dim``. A query's regions are matched against all the map's regions by
appearance (not by label: a mislabelled region still finds its match), and a map image's
score is the mean over the query's regions of the best similarity among the image's
regions.

``describe`` returns a query's region vectors (R, G), not one vector: ``search`` takes them.
"""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from ..errors import PramlocError
from .backbones import dense_features
from .base import RetrievalInput, as_input, register
from .dense import DenseIndex, Settings, _unit, fit_pca
from .vlad import build_vocabulary, vlad

MIN_KEYPOINTS = 5
GROW = 2  # cells


def regions(feats: np.ndarray, keypoints: np.ndarray, labels: np.ndarray, image_size: tuple[int, int]) -> list[np.ndarray]:
    """Boolean cell masks (h, w) of an image's regions: the whole image, then one per
    landmark with at least MIN_KEYPOINTS keypoints (K, 2) labelled with it (labels (K,),
    0: background), in pixels of an image of ``image_size`` (W, H)."""
    h, w = feats.shape[:2]
    out = [np.ones((h, w), bool)]
    if keypoints is None or labels is None or not len(labels):
        return out
    W, H = image_size
    cx = np.clip(((np.asarray(keypoints)[:, 0] + 0.5) * w / W).astype(int), 0, w - 1)
    cy = np.clip(((np.asarray(keypoints)[:, 1] + 0.5) * h / H).astype(int), 0, h - 1)
    lab = np.asarray(labels)
    for l in np.unique(lab[lab > 0]):
        sel = lab == l
        if sel.sum() < MIN_KEYPOINTS:
            continue
        mask = np.zeros((h, w), np.uint8)
        mask[cy[sel], cx[sel]] = 1
        out.append(cv2.dilate(mask, np.ones((2 * GROW + 1, 2 * GROW + 1), np.uint8)).astype(bool))
    return out


@register("landmark-vlad")
class LandmarkVladIndex(DenseIndex):
    """Region VLADs of the map images: ``vectors`` (R, G) float16, ``region_image`` (R,)
    the map image of each region; ``vocabulary`` (K, D); PCA ``mean``/``projection``."""

    needs = ("image", "keypoints", "labels")

    def __init__(self, settings: Settings):
        super().__init__(settings)
        self.vocabulary = np.zeros((0, 0), np.float32)
        self.region_image = np.zeros(0, np.int32)
        self.num_images = 0

    def _region_vlads(self, item: RetrievalInput, feats: np.ndarray) -> np.ndarray:
        masks = regions(feats, item.keypoints, item.labels, item.memo["size"])  # size: set by dense_features
        return np.stack([vlad(feats[m], self.vocabulary) for m in masks])

    @classmethod
    def fit(cls, items: Sequence[RetrievalInput], conf) -> "LandmarkVladIndex":
        index = cls(Settings({**Settings.of(conf).__dict__, "region_dim": conf.region_dim}))
        items = [as_input(i) for i in items]
        for it in items:
            it.require("labels", "landmark-vlad")
        feats = [dense_features(i, index.settings) for i in items]
        index.vocabulary = build_vocabulary([f.reshape(-1, f.shape[-1]) for f in feats],
                                            index.settings.dense_words, seed=index.settings.seed)
        raw = [index._region_vlads(it, f) for it, f in zip(items, feats)]
        index.region_image = np.concatenate([np.full(len(r), i, np.int32) for i, r in enumerate(raw)])
        allraw = np.concatenate(raw)
        index.mean, index.projection = fit_pca(allraw, index.settings.region_dim, whiten=False)
        index.vectors = np.stack([index._finish(r) for r in allraw]).astype(np.float16)
        index.num_images = len(items)
        return index

    def describe(self, item: RetrievalInput | np.ndarray) -> np.ndarray:
        """The region vectors (R, G) of one image (its image, keypoints and labels are read)."""
        item = as_input(item)
        item.require("labels", "landmark-vlad")
        feats = dense_features(item, self.settings)
        return np.stack([self._finish(r) for r in self._region_vlads(item, feats)])

    def __len__(self) -> int:
        return self.num_images

    def scores(self, regions_q: np.ndarray) -> np.ndarray:
        """Score (M,) of each map image for a query's region vectors (R, G)."""
        q = np.atleast_2d(np.asarray(regions_q, np.float32))
        if q.shape[-1] != self.vectors.shape[1]:
            raise PramlocError(f"landmark-vlad: query vectors have dimension {q.shape[-1]}, "
                               f"index has {self.vectors.shape[1]}")
        s = q @ np.asarray(self.vectors, np.float32).T  # (R, R_map)
        best = np.full((len(q), self.num_images), -np.inf, np.float32)
        np.maximum.at(best.T, self.region_image, s.T)  # per map image: its best region
        return best.mean(0)

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        s = self.scores(query)
        k = max(0, min(int(k), len(self)))
        order = np.argsort(-s, kind="stable")[:k].astype(np.int64)
        return order, s[order].astype(np.float32)

    @property
    def nbytes(self) -> int:
        return self.vectors.nbytes + self.region_image.nbytes

    def subset(self, rows: Sequence[int]) -> "LandmarkVladIndex":
        import copy

        rows = np.asarray(rows, np.int64)
        new_id = np.full(self.num_images, -1, np.int64)
        new_id[rows] = np.arange(len(rows))
        keep = new_id[self.region_image] >= 0
        index = copy.copy(self)
        index.vectors, index.region_image = self.vectors[keep], new_id[self.region_image[keep]].astype(np.int32)
        index.num_images = len(rows)
        return index

    def model_arrays(self) -> dict[str, np.ndarray]:
        return {"vocabulary": self.vocabulary, "region_image": self.region_image,
                "num_images": np.array(self.num_images, np.int64)}

    def load_model(self, arrays: dict) -> None:
        self.vocabulary = np.asarray(arrays["vocabulary"], np.float32)
        self.region_image = np.asarray(arrays["region_image"], np.int32)
        self.num_images = int(np.asarray(arrays["num_images"]))
