"""Dense feature maps for the global descriptors (AnyLoc, GeM, SuperVLAD, landmark VLAD).

A backbone turns a grayscale image into a grid of local features at stride 8 (14 for
DINOv2's patches), one unit vector per cell:

- ``xfeat``: XFeat's 64-D feature map (1/8 resolution), the network of :mod:`pramloc.features.xfeat`;
- ``disk``: DISK's 128-D per-pixel descriptors averaged over 8x8 cells (:mod:`pramloc.features.disk`);
- ``dinov2``: the patch tokens of a DINOv2 ViT read from a local checkpoint
  (``retrieval.weights``, :mod:`.dinov2`; nothing is downloaded).

:func:`dense_features` reads the image (a file, or an array) at ``retrieval.max_side`` and
remembers the result in the :class:`~.base.RetrievalInput` (several methods fitted on the
same images compute it once).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..errors import PramlocError
from .base import RetrievalInput


@dataclass(frozen=True)
class Backbone:
    """A dense backbone: ``name``, feature size ``dim`` (None: read from the weights),
    side multiple ``multiple`` the network needs, and ``run(image (1, 3, H, W) in [0, 1],
    conf) -> (1, D, h, w)``."""

    name: str
    dim: int | None
    multiple: int
    run: Callable[[torch.Tensor, object], torch.Tensor]


def _xfeat(x: torch.Tensor, conf) -> torch.Tensor:
    from ..features.xfeat import load_model

    feats, _, _ = load_model(str(x.device)).net(x[:, :1])
    return feats  # (1, 64, H/8, W/8)


def _disk(x: torch.Tensor, conf) -> torch.Tensor:
    from ..features.disk import load_model

    _, desc = load_model(str(x.device)).heatmap_and_dense_descriptors(x)
    return F.avg_pool2d(desc, 8)  # (1, 128, H/8, W/8)


def _dinov2(x: torch.Tensor, conf) -> torch.Tensor:
    from .dinov2 import load_checkpoint

    if not conf.weights:
        raise PramlocError("retrieval.backbone dinov2 needs retrieval.weights=PATH (a local DINOv2 checkpoint)")
    model = load_checkpoint(conf.weights, str(x.device))
    return model.patch_features(x)  # (1, D, H/14, W/14)


BACKBONES = {"xfeat": Backbone("xfeat", 64, 32, _xfeat),
             "disk": Backbone("disk", 128, 16, _disk),
             "dinov2": Backbone("dinov2", None, 14, _dinov2)}


def get_backbone(name: str) -> Backbone:
    if name not in BACKBONES:
        raise PramlocError(f"unknown retrieval.backbone {name!r} (known: {', '.join(BACKBONES)})")
    return BACKBONES[name]


def _gray(item: RetrievalInput, max_side: int | None) -> np.ndarray:
    """The image of ``item`` as grayscale (h, w) uint8 with max(h, w) <= ``max_side``; the
    (W, H) of the full image is kept in ``item.memo["size"]`` (keypoints are in its pixels)."""
    from ..features import load_image, resize_max_side

    image = item.require("image", "dense retrieval")
    if isinstance(image, np.ndarray):
        item.memo["size"] = (image.shape[1], image.shape[0])
        if image.ndim == 3:
            image = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY if image.shape[2] == 3 else cv2.COLOR_RGBA2GRAY)
        if image.ndim != 2 or image.dtype != np.uint8:
            raise PramlocError(f"{item.name or 'image'}: expected a grayscale uint8 image, got {image.dtype} "
                               f"{image.shape}")
    else:
        image, item.memo["size"] = load_image(image, max_side)
    return resize_max_side(image, max_side)[0]


def dense_features(item: RetrievalInput, conf) -> np.ndarray:
    """The dense features (h, w, D) float32 of ``item``'s image with ``conf.backbone``
    (a :class:`~pramloc.config.RetrievalConfig`), each an L2-normalised vector. The image
    is resized to at most ``conf.max_side`` and its sides rounded down to the backbone's
    multiple (at least one multiple)."""
    from ..features.learned import cpu_threads, device, prepare

    key = f"dense:{conf.backbone}:{conf.max_side}:{conf.weights}"
    if key in item.memo and "size" in item.memo:
        return item.memo[key].astype(np.float32)
    backbone = get_backbone(conf.backbone)
    gray = _gray(item, conf.max_side)
    m = backbone.multiple
    h, w = (max(m, s // m * m) for s in gray.shape)
    if (h, w) != gray.shape:
        gray = cv2.resize(gray, (w, h), interpolation=cv2.INTER_AREA)
    dev = device(conf.device)
    prepare(dev)
    x = torch.from_numpy(gray.astype(np.float32) / 255.0).to(dev)[None, None].expand(1, 3, h, w).contiguous()
    with torch.inference_mode(), cpu_threads(dev, getattr(conf, "num_threads", None)):
        f = F.normalize(backbone.run(x, conf).float(), dim=1)[0]  # (D, h', w')
    # Kept at half the size (unit vectors lose ~1e-3), and returned as kept: the same
    # features whether computed now or remembered.
    item.memo[key] = f.permute(1, 2, 0).cpu().numpy().astype(np.float16)
    return item.memo[key].astype(np.float32)
