"""The landmark recognizer (PRAM-style): a transformer over the keypoints of one image that
labels every keypoint with a landmark (or background); landmark votes rank the landmarks
that are visible in the image.

Token of keypoint i = Fourier features of its normalised (x, y) through an MLP + its
descriptor through an MLP. Pre-norm transformer blocks with self-attention
(``torch.nn.functional.scaled_dot_product_attention``) whose queries and keys are rotated
by learnable Fourier features of the keypoint positions (rotary encoding, as in LightGlue),
so attention sees *relative* positions: neighbouring keypoints of the same landmark are
easy to attend to. Then a per-keypoint classifier over ``num_landmarks + 1`` classes
(class 0 = background, class l + 1 = landmark l), and an image-level head over the
mean of the keypoint tokens that predicts which share of the map points in view belongs to
each landmark (the landmark-visibility head).
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import RecognizerConfig
from ..errors import PramlocError
from ..features.learned import cpu_threads
from .data import check_inputs, collate, normalize_keypoints, View

CHECKPOINT_FORMAT = "pramloc-recognizer"
CHECKPOINT_VERSION = 2  # 2: landmark-visibility head

MODEL_KEYS = ("width", "layers", "heads", "mlp_ratio", "dropout", "fourier_sigma")
# Architecture defaults: those of the recognizer config, for 128-D descriptors and 32 landmarks.
default_model_conf = {"descriptor_dim": 128, "num_landmarks": 32,
                      **{k: getattr(RecognizerConfig(), k) for k in MODEL_KEYS}}


class FourierPositionEncoder(nn.Module):
    """Normalised (x, y) (B, N, 2) -> (B, N, width): learnable Fourier features + MLP."""

    def __init__(self, width: int, sigma: float):
        super().__init__()
        self.freqs = nn.Linear(2, width // 2, bias=False)
        nn.init.normal_(self.freqs.weight, std=sigma)
        self.mlp = nn.Sequential(nn.Linear(2 * (width // 2), width), nn.GELU(), nn.Linear(width, width))

    def forward(self, xy: torch.Tensor) -> torch.Tensor:
        f = self.freqs(xy)
        return self.mlp(torch.cat([f.cos(), f.sin()], dim=-1))


class RotaryEncoder(nn.Module):
    """Normalised (x, y) (B, N, 2) -> rotary embedding (2, B, 1, N, head_dim): cos and sin of
    learnable Fourier features, each repeated for a pair of channels."""

    def __init__(self, head_dim: int, sigma: float):
        super().__init__()
        self.freqs = nn.Linear(2, head_dim // 2, bias=False)
        nn.init.normal_(self.freqs.weight, std=sigma)

    def forward(self, xy: torch.Tensor) -> torch.Tensor:
        f = self.freqs(xy)
        return torch.stack([f.cos(), f.sin()], 0).unsqueeze(-3).repeat_interleave(2, dim=-1)


def rotate(x: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
    """Apply the rotary embedding (2, B, 1, N, d) to x (B, heads, N, d)."""
    x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)
    return x * rope[0] + torch.stack((-x2, x1), -1).flatten(-2) * rope[1]


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), x + mlp(norm(x)). x: (B, N, width)."""

    def __init__(self, width: int, heads: int, mlp_ratio: int, dropout: float):
        super().__init__()
        if width % heads or (width // heads) % 2:
            raise PramlocError(f"recognizer: width {width} must be divisible by heads {heads} into an even "
                               "head size (rotary encoding)")
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)
        self.mlp = nn.Sequential(nn.Linear(width, mlp_ratio * width), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(mlp_ratio * width, width))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, rope: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
        """rope: (2, B, 1, N, head_dim); attn_mask: (B, 1, 1, N) bool, True = key takes part,
        or None (no padding)."""
        b, n, w = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4)
        q, k = rotate(q, rope), rotate(k, rope)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)  # no attention dropout: fused kernel
        x = x + self.drop(self.out(a.transpose(1, 2).reshape(b, n, w)))
        return x + self.drop(self.mlp(self.norm2(x)))


class LandmarkTransformer(nn.Module):
    """Per-keypoint landmark classifier and landmark-visibility head.

    ``forward(xy (B, N, 2), descriptors (B, N, D), mask (B, N) bool or None)`` returns
    keypoint logits (B, N, num_landmarks + 1) and visibility logits (B, num_landmarks)
    (softmax: the predicted share of each landmark among the map points in view)."""

    def __init__(self, conf: dict):
        super().__init__()
        self.conf = conf = {**default_model_conf, **conf}
        w = conf["width"]
        self.position = FourierPositionEncoder(w, conf["fourier_sigma"])
        self.rotary = RotaryEncoder(w // conf["heads"], conf["fourier_sigma"])
        self.descriptor = nn.Sequential(nn.Linear(conf["descriptor_dim"], 2 * w), nn.GELU(), nn.Linear(2 * w, w))
        self.blocks = nn.ModuleList(Block(w, conf["heads"], conf["mlp_ratio"], conf["dropout"])
                                    for _ in range(conf["layers"]))
        self.norm = nn.LayerNorm(w)
        self.classifier = nn.Linear(w, conf["num_landmarks"] + 1)
        self.visibility = nn.Sequential(nn.Linear(w, w), nn.GELU(), nn.Linear(w, conf["num_landmarks"]))

    def forward(self, xy: torch.Tensor, descriptors: torch.Tensor, mask: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        x, pooled = self.encode(xy, descriptors, mask)
        return self.classifier(x), self.visibility(pooled)

    def encode(self, xy: torch.Tensor, descriptors: torch.Tensor, mask: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Keypoint tokens (B, N, width) after the last block and their (masked) mean (B, width),
        the inputs of the classifier and of the visibility head."""
        x = self.descriptor(descriptors) + self.position(xy)
        rope = self.rotary(xy)
        attn_mask = None if mask is None or bool(mask.all()) else mask[:, None, None, :]
        for block in self.blocks:
            x = block(x, rope, attn_mask)
        x = self.norm(x)
        if mask is None:
            pooled = x.mean(1)
        else:
            m = mask.unsqueeze(-1).to(x.dtype)
            pooled = (x * m).sum(1) / m.sum(1).clamp(min=1)
        return x, pooled

    def classify(self, x: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """Keypoint logits (N, C) of tokens ``x`` (N, width) over the classes ``classes`` (C,)
        only (0 = background, l + 1 = landmark l): rows of the classifier."""
        return F.linear(x, self.classifier.weight[classes], self.classifier.bias[classes])

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


@dataclass
class RecognitionResult:
    """Recognition of one image with N keypoints and L landmarks.

    - ``labels`` (N,) int64: 0 = background, l + 1 = landmark l.
    - ``confidence`` (N,) float32: softmax probability of the predicted label.
    - ``votes`` (L,) float32: sum of ``confidence`` over the keypoints labelled with each landmark.
    - ``visibility`` (L,) float32: the visibility head's share of each landmark among the
      map points in view; landmarks are ranked by it.
    - ``probs`` (N, L + 1) float32 class probabilities, or None unless asked for.
    """

    labels: np.ndarray
    confidence: np.ndarray
    votes: np.ndarray
    visibility: np.ndarray
    probs: np.ndarray | None = None

    def ranked(self, min_votes: float = 0.0) -> np.ndarray:
        """Landmark ids (0-based) by decreasing visibility (ties: lower id first), those
        with votes > ``min_votes`` only (a landmark without labelled keypoints has nothing
        to match)."""
        order = np.argsort(-self.visibility, kind="stable")
        return order[self.votes[order] > min_votes]


def make_result(logits: torch.Tensor, visibility: torch.Tensor, num_landmarks: int,
                return_probs: bool = False, classes: torch.Tensor | None = None) -> RecognitionResult:
    """Keypoint logits (N, num_landmarks + 1) and visibility logits (num_landmarks,) of one
    image -> labels, confidences, landmark votes and visibility shares. With ``classes`` (C,)
    the logits (N, C) cover those classes only (the softmax is over them; the others get
    probability 0)."""
    probs = torch.softmax(logits.float(), dim=-1)
    confidence, labels = probs.max(dim=-1)
    if classes is not None:
        labels = classes.to(labels.device)[labels]
        if return_probs:
            full = probs.new_zeros((len(probs), num_landmarks + 1))
            full[:, classes.to(probs.device)] = probs
            probs = full
    labels, confidence = labels.cpu().numpy().astype(np.int64), confidence.cpu().numpy().astype(np.float32)
    fg = labels > 0
    votes = np.bincount(labels[fg] - 1, weights=confidence[fg], minlength=num_landmarks).astype(np.float32)
    vis = torch.softmax(visibility.float(), dim=-1).cpu().numpy().astype(np.float32)
    return RecognitionResult(labels, confidence, votes, vis, probs.cpu().numpy() if return_probs else None)


def resolve_device(device: str | None) -> torch.device:
    """``None``/``"cpu"`` -> CPU, ``"cuda"`` -> CUDA (error if absent), ``"auto"`` -> CUDA if available."""
    if device in (None, "cpu"):
        return torch.device("cpu")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise PramlocError(f"recognizer: device {device!r} requested but CUDA is not available")
    try:
        return torch.device(device)
    except RuntimeError:
        raise PramlocError(f"recognizer: unknown device {device!r} (use cpu, cuda or auto)") from None


class Recognizer:
    """A trained :class:`LandmarkTransformer` ready for inference on numpy inputs."""

    #: Landmarks a keypoint is classified over at most: on a map with more, the keypoints are
    #: classified over the ones the visibility head ranks first (plus background). The
    #: classifier's cost is keypoints x classes x width: 1.9 GFLOP per query at 19k landmarks
    #: (a 100k-image map), 0.1 with this cap. Maps with fewer landmarks are unaffected.
    max_candidates: int = 512

    def __init__(self, model: LandmarkTransformer, device: str | torch.device | None = None,
                 metrics: dict | None = None):
        self.device = device if isinstance(device, torch.device) else resolve_device(device)
        self.model = model.to(self.device).eval()
        if self.device.type == "cpu":
            # Subnormal activations (e.g. in the attention's softmax tails) make CPU inference
            # up to 1.5x slower; flushing them to zero changes nothing measurable.
            torch.set_flush_denormal(True)
        self.metrics = metrics or {}

    @property
    def num_landmarks(self) -> int:
        return self.model.conf["num_landmarks"]

    @property
    def descriptor_dim(self) -> int:
        return self.model.conf["descriptor_dim"]

    # --- checkpoint I/O -------------------------------------------------------------------

    @classmethod
    def load(cls, path: Path, device: str | None = None, data: bytes | None = None) -> "Recognizer":
        """Load a checkpoint file, or its ``data`` already read (``path`` then names it in errors)."""
        import io

        path = Path(path)
        if data is None and not path.is_file():
            raise PramlocError(f"{path}: recognizer checkpoint not found")
        try:
            ckpt = torch.load(io.BytesIO(data) if data is not None else path, map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises many types for bad files
            raise PramlocError(f"{path}: cannot read recognizer checkpoint (corrupt or not a torch file: "
                               f"{str(err).splitlines()[0][:120]})") from None
        if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
            raise PramlocError(f"{path}: not a pramloc recognizer checkpoint")
        if ckpt.get("version") != CHECKPOINT_VERSION:
            raise PramlocError(f"{path}: recognizer checkpoint version {ckpt.get('version')} is not supported "
                               f"(expected {CHECKPOINT_VERSION}); rebuild the map")
        try:
            model = LandmarkTransformer(ckpt["config"])
            state = {k: v.float() if v.is_floating_point() else v for k, v in ckpt["state_dict"].items()}
            model.load_state_dict(state)
        except (KeyError, RuntimeError, TypeError, ValueError, PramlocError) as err:
            raise PramlocError(f"{path}: recognizer checkpoint does not match the model "
                               f"({str(err).splitlines()[0][:120]})") from None
        return cls(model, device, ckpt.get("metrics", {}))

    # --- inference ------------------------------------------------------------------------

    def _view(self, item, index: int | None = None) -> View:
        if not isinstance(item, (tuple, list)) or len(item) != 3:
            raise PramlocError(f"recognizer: query {index}: expected (keypoints, descriptors, image_size)")
        keypoints, descriptors, image_size = item
        keypoints = np.asarray(keypoints, dtype=np.float32)
        descriptors = np.asarray(descriptors, dtype=np.float32)
        what = "recognizer input" if index is None else f"recognizer input {index}"
        check_inputs(keypoints, descriptors, image_size, what=what, dim=self.descriptor_dim)
        return View(normalize_keypoints(keypoints, image_size), descriptors, np.zeros(len(keypoints), np.int64))

    def _empty(self, return_probs: bool) -> RecognitionResult:
        return RecognitionResult(np.zeros(0, np.int64), np.zeros(0, np.float32),
                                 *(np.zeros(self.num_landmarks, np.float32) for _ in range(2)),
                                 np.zeros((0, self.num_landmarks + 1), np.float32) if return_probs else None)

    def recognize(self, keypoints: np.ndarray, descriptors: np.ndarray, image_size,
                  return_probs: bool = False) -> RecognitionResult:
        """Label the keypoints (N, 2) (pixels) with descriptors (N, D) of an image of
        ``image_size`` (W, H)."""
        return self.recognize_batch([(keypoints, descriptors, image_size)], return_probs)[0]

    def recognize_batch(self, items: list, return_probs: bool = False) -> list[RecognitionResult]:
        """:meth:`recognize` for a list of ``(keypoints, descriptors, image_size)``, one padded forward pass."""
        views = [self._view(item, i if len(items) > 1 else None) for i, item in enumerate(items)]
        results: list[RecognitionResult | None] = [None] * len(views)
        todo = [i for i, v in enumerate(views) if len(v.xy)]
        for i in set(range(len(views))) - set(todo):
            results[i] = self._empty(return_probs)
        if todo:
            batch = collate([views[i] for i in todo])
            # One image on the CPU: one thread. Its ~100 small kernels gain nothing from a
            # second thread that sleeps between them (OMP_WAIT_POLICY=PASSIVE, see
            # pramloc.runtime): in the localizer, 256 keypoints took 4.1 instead of 5.3 ms per
            # query, 512 keypoints 8.0 instead of 8.5 ms (2 cores).
            with torch.inference_mode(), cpu_threads(self.device, 1) if len(todo) == 1 else nullcontext():
                x, pooled = self.model.encode(batch["xy"].to(self.device), batch["descriptors"].to(self.device),
                                              batch["mask"].to(self.device))
                visibility = self.model.visibility(pooled)
                for j, i in enumerate(todo):
                    tokens = x[j, : len(views[i].xy)]
                    if self.num_landmarks <= self.max_candidates:
                        results[i] = make_result(self.model.classifier(tokens), visibility[j], self.num_landmarks,
                                                 return_probs)
                        continue
                    top = torch.topk(visibility[j], self.max_candidates).indices
                    classes = torch.cat([top.new_zeros(1), torch.sort(top).values + 1])
                    results[i] = make_result(self.model.classify(tokens, classes), visibility[j], self.num_landmarks,
                                             return_probs, classes)
        return results


def save_checkpoint(model: LandmarkTransformer, path: Path, metrics: dict) -> Path:
    """Checkpoint = {format, version, config, state_dict (fp16), metrics}; written atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: (v.detach().half() if v.is_floating_point() else v.detach()).cpu().contiguous()
             for k, v in model.state_dict().items()}
    ckpt = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "config": dict(model.conf),
            "state_dict": state, "metrics": dict(metrics)}
    tmp = path.with_name(path.name + ".tmp")
    torch.save(ckpt, tmp)
    tmp.replace(path)
    return path
