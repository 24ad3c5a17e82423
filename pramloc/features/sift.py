"""SIFT (OpenCV) with RootSIFT normalisation: descriptors (N, 128), L2 norm 1."""

from __future__ import annotations

import cv2
import numpy as np

from ..config import FeatureConfig


def extract(image: np.ndarray, conf: FeatureConfig) -> dict[str, np.ndarray]:
    """image: (H, W) float32 in [0, 255]. Keypoints (N, 2) with pixel centres at integers."""
    sift = cv2.SIFT_create(nfeatures=int(conf.max_keypoints or 0))
    kps, desc = sift.detectAndCompute(image.astype(np.uint8), None)
    if desc is None or len(kps) == 0:
        return {"keypoints": np.zeros((0, 2), np.float32), "descriptors": np.zeros((0, 128), np.float32),
                "scores": np.zeros((0,), np.float32)}
    xy = np.array([k.pt for k in kps], dtype=np.float32)
    scores = np.array([k.response for k in kps], dtype=np.float32)
    # OpenCV may return more than nfeatures on ties; keep the strongest.
    order = np.argsort(-scores, kind="stable")[: int(conf.max_keypoints or len(kps))]
    xy, scores, desc = xy[order], scores[order], desc[order].astype(np.float32)
    if conf.root_sift:
        desc = np.sqrt(desc / np.maximum(desc.sum(1, keepdims=True), 1e-8))
    else:
        desc = desc / np.maximum(np.linalg.norm(desc, axis=1, keepdims=True), 1e-8)
    return {"keypoints": xy, "descriptors": desc, "scores": scores}
