"""SIFT (OpenCV) with RootSIFT normalisation: descriptors (N, 128), non-negative, L2 norm 1."""

from __future__ import annotations

import cv2
import numpy as np

from ..config import FeatureConfig
from . import register
from .base import DescriptorSpec, Features

# RootSIFT components are <= 0.5 in practice: x 512 fills uint8 (maps before the spec: the same).
SPEC = DescriptorSpec(dim=128, signed=False, norm="l2", storage="uint8", scale=512.0)


@register("sift", SPEC)
def extract(image: np.ndarray, conf: FeatureConfig) -> Features:
    """image: (H, W) float32 in [0, 255]. Keypoints (N, 2) with pixel centres at integers."""
    sift = cv2.SIFT_create(nfeatures=int(conf.max_keypoints or 0))
    kps, desc = sift.detectAndCompute(image.astype(np.uint8), None)
    if desc is None or len(kps) == 0:
        return Features.empty(SPEC.dim)
    xy = np.array([k.pt for k in kps], dtype=np.float32)
    scores = np.array([k.response for k in kps], dtype=np.float32)
    desc = desc.astype(np.float32)
    if conf.root_sift:
        desc = np.sqrt(desc / np.maximum(desc.sum(1, keepdims=True), 1e-8))
    else:
        desc = desc / np.maximum(np.linalg.norm(desc, axis=1, keepdims=True), 1e-8)
    # OpenCV may return more than nfeatures on ties; keep the strongest.
    return Features(xy, scores, desc).strongest(conf.max_keypoints)
