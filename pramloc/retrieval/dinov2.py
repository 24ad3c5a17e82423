"""A DINOv2 vision transformer (Oquab et al. 2023) defined here, its weights read from a
checkpoint file on disk (``retrieval.weights``, e.g. ``dinov2_vits14_pretrain.pth``);
nothing is downloaded.

The layout is the official one (the keys of its state dict): a 14x14 patch embedding,
a class token and learned position embeddings (interpolated to the image's grid), optional
register tokens, ``depth`` pre-norm blocks (attention and MLP, each with a LayerScale),
a final LayerNorm. The size (embedding width, depth, registers, patch) is read from the
checkpoint: ViT-S/B/L with MLP blocks (ViT-g's SwiGLU blocks are not supported). The
patch tokens of the last layer are the dense features (AnyLoc reads an intermediate
layer's value facet of ViT-g; the last layer of a small ViT is the simple choice here).
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import PramlocError

HEAD_DIM = 64
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class LayerScale(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, N, C) -> (B, N, C)."""
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, hidden: int):
        super().__init__()
        self.norm1, self.attn, self.ls1 = nn.LayerNorm(dim, eps=1e-6), Attention(dim, heads), LayerScale(dim)
        self.norm2, self.mlp, self.ls2 = nn.LayerNorm(dim, eps=1e-6), Mlp(dim, hidden), LayerScale(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    def __init__(self, patch: int, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, patch, patch)


class DinoV2(nn.Module):
    """ViT of width ``dim`` and ``depth`` blocks, ``patch`` px patches, ``num_positions``
    learned patch positions (a square grid), ``registers`` register tokens."""

    def __init__(self, dim: int, depth: int, patch: int = 14, num_positions: int = 1369, registers: int = 0,
                 mlp_hidden: int | None = None):
        super().__init__()
        self.patch = patch
        self.patch_embed = PatchEmbed(patch, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + num_positions, dim))
        self.mask_token = nn.Parameter(torch.zeros(1, dim))
        self.register_tokens = nn.Parameter(torch.zeros(1, registers, dim)) if registers else None
        self.blocks = nn.ModuleList(Block(dim, max(1, dim // HEAD_DIM), mlp_hidden or 4 * dim) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    @property
    def dim(self) -> int:
        return self.cls_token.shape[-1]

    def _positions(self, h: int, w: int) -> torch.Tensor:
        """Position embeddings (1, 1 + h * w, D) for a grid of h x w patches."""
        cls, grid = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        side = int(math.isqrt(grid.shape[1]))
        if (h, w) != (side, side):
            grid = grid.reshape(1, side, side, -1).permute(0, 3, 1, 2)
            grid = F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=False)
            grid = grid.permute(0, 2, 3, 1).reshape(1, h * w, -1)
        return torch.cat([cls, grid], 1)

    def patch_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) in [0, 1] (sides multiples of the patch) -> the last layer's
        normalised patch tokens as a map (B, D, H / patch, W / patch)."""
        b, _, hh, ww = x.shape
        h, w = hh // self.patch, ww // self.patch
        mean = x.new_tensor(IMAGENET_MEAN)[None, :, None, None]
        std = x.new_tensor(IMAGENET_STD)[None, :, None, None]
        t = self.patch_embed.proj((x - mean) / std).flatten(2).transpose(1, 2)  # (B, h * w, D)
        t = torch.cat([self.cls_token.expand(b, -1, -1), t], 1) + self._positions(h, w)
        extra = 1
        if self.register_tokens is not None:
            t = torch.cat([t[:, :1], self.register_tokens.expand(b, -1, -1), t[:, 1:]], 1)
            extra += self.register_tokens.shape[1]
        for blk in self.blocks:
            t = blk(t)
        t = self.norm(t)[:, extra:]
        return t.transpose(1, 2).reshape(b, -1, h, w)


def _state_dict(obj) -> dict:
    """The model's state dict inside a checkpoint (plain, or under model/teacher/state_dict,
    with a ``backbone.`` prefix or not)."""
    for key in ("teacher", "model", "state_dict"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        return {}
    return {k.removeprefix("backbone."): v for k, v in obj.items() if torch.is_tensor(v)}


def from_state_dict(state: dict, path: str = "checkpoint") -> DinoV2:
    """A :class:`DinoV2` of the size ``state`` describes, with its weights."""
    need = ("patch_embed.proj.weight", "pos_embed", "cls_token", "norm.weight")
    missing = [k for k in need if k not in state]
    if missing:
        raise PramlocError(f"{path}: not a DINOv2 ViT checkpoint (no {missing[0]!r})")
    if any(".mlp.w12." in k for k in state):
        raise PramlocError(f"{path}: SwiGLU blocks (ViT-g) are not supported; use a ViT-S/B/L checkpoint")
    dim, _, patch, _ = state["patch_embed.proj.weight"].shape
    depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
    registers = state["register_tokens"].shape[1] if "register_tokens" in state else 0
    model = DinoV2(dim, depth, patch, state["pos_embed"].shape[1] - 1, registers,
                   state["blocks.0.mlp.fc1.weight"].shape[0])
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise PramlocError(f"{path}: weights do not fit a DINOv2 ViT ({str(err).splitlines()[0][:160]})") from None
    return model.eval()


@lru_cache(maxsize=2)
def load_checkpoint(path: str, device: str = "cpu") -> DinoV2:
    """The DINOv2 ViT of the checkpoint file ``path`` on ``device`` (cached)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise PramlocError(f"{p}: DINOv2 checkpoint not found (retrieval.weights)")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is one clear line
        raise PramlocError(f"{p}: cannot read the checkpoint ({str(err).splitlines()[0][:160]})") from None
    return from_state_dict(_state_dict(obj), str(p)).to(device)
