"""Training of the landmark recognizer on the labelled keypoints of the map images.

A seeded share of the map images is held out for validation (model selection and early
stopping). Each step sees ``batch_size`` augmented views (:func:`.data.augmented_view`);
the loss is cross-entropy with label smoothing and a down-weighted background class on
the keypoints, plus (weight ``visibility_weight``) the cross-entropy of the visibility head
against the share of each landmark among the map points visible in the view.
AdamW, linear warm-up then cosine decay over the step budget, which is sized to the map
(:func:`step_budget`: ``steps_per_image`` per training image, at least ``min_steps``; or
``epochs`` epochs). The run stops at the end of the budget, after ``patience`` steps without
a gain of ``min_improvement`` in validation keypoint accuracy, or at the hard time limit
``train_minutes``; the best weights are kept. Runs that end by budget or patience are
bit-exact reproducible on one machine (the time limit is the only clock in the loop).
"""

from __future__ import annotations

import copy
import math
import os
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .. import logger
from ..config import RecognizerConfig, deep_merge
from ..errors import PramlocError
from ..features.base import DescriptorSpec
from ..progress import track
from .data import (IGNORE_INDEX, TrainingImage, augmented_view, check_training_images, collate, infer_spec, plain_view,
                   split_train_val, visibility_targets)
from .model import MODEL_KEYS, LandmarkTransformer, make_result, resolve_device, save_checkpoint



def _cpu_times() -> tuple[float, float] | None:
    """(idle, total) jiffies of all cores from /proc/stat, or None where unavailable."""
    try:
        with open("/proc/stat") as f:
            values = [float(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return values[3] + (values[4] if len(values) > 4 else 0.0), sum(values[:8])


def default_threads(sample_s: float = 0.3) -> int:
    """CPU threads for training: the cores idle now (sampled over ``sample_s`` from
    /proc/stat; else the 1-minute load average), 1..8. Oversubscribed cores make
    multi-threaded torch many times slower, not faster."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    a = _cpu_times()
    if a is not None:
        time.sleep(sample_s)
        b = _cpu_times()
        total = b[1] - a[1] if b else 0.0
        busy = (1 - (b[0] - a[0]) / total) * (os.cpu_count() or cores) if total > 0 else 0.0
    else:
        try:
            busy = os.getloadavg()[0]
        except OSError:
            busy = 0.0
    return int(max(1, min(8, round(cores - busy))))


@contextmanager
def torch_settings(device: torch.device, num_threads: int | None):
    """Thread count and (on CPU) deterministic algorithms for the run; restored afterwards."""
    prev_threads, prev_det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.set_num_threads(int(num_threads) if num_threads else default_threads())
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.set_flush_denormal(True)  # subnormal floats are many times slower on CPUs
    try:
        yield
    finally:
        torch.set_num_threads(prev_threads)
        torch.use_deterministic_algorithms(prev_det, warn_only=prev_warn)


def loss_fn(logits: torch.Tensor, labels: torch.Tensor, class_weight: torch.Tensor, smoothing: float,
            visibility: torch.Tensor | None = None, target: tuple[torch.Tensor, torch.Tensor] | None = None,
            visibility_weight: float = 0.0) -> torch.Tensor:
    """Weighted, label-smoothed cross-entropy of the keypoints, logits (B, N, C) and labels
    (B, N) (padding ignored), plus ``visibility_weight`` times the cross-entropy of the
    visibility logits (B, L) against ``target`` = (shares (B, L), valid (B,) bool)."""
    loss = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), weight=class_weight,
                           ignore_index=IGNORE_INDEX, label_smoothing=smoothing)
    if visibility is not None and target is not None and visibility_weight > 0 and bool(target[1].any()):
        shares, valid = target
        vis_loss = -(shares[valid] * F.log_softmax(visibility[valid].float(), -1)).sum(-1).mean()
        loss = loss + visibility_weight * vis_loss
    return loss


@torch.inference_mode()
def evaluate(model: LandmarkTransformer, images: list[TrainingImage], num_landmarks: int,
             max_keypoints: int | None, device: torch.device, batch_size: int = 8,
             class_weight: torch.Tensor | None = None, smoothing: float = 0.0, visibility_weight: float = 0.0) -> dict:
    """Metrics of ``model`` on unaugmented images (first ``max_keypoints`` keypoints):

    - ``loss``: the training loss on these images;
    - ``keypoint_accuracy``: share of landmark-labelled keypoints given their landmark;
    - ``background_accuracy``: share of background keypoints predicted as background;
    - ``top1_precision``: share of images (with >= 1 labelled keypoint) whose top-voted
      landmark is present in the image;
    - ``recall_at_3``: share of images whose dominant landmark (most visible map points,
      or most labelled keypoints where the visible points are unknown) is among the 3
      top-ranked landmarks.
    """
    was_training = model.training
    model.eval()
    losses, weights = [], []
    correct = labelled = bg_correct = bg_total = top1 = rec3 = n_images = 0
    for start in range(0, len(images), batch_size):
        views = [plain_view(im, max_keypoints) for im in images[start:start + batch_size]]
        batch = {k: v.to(device) for k, v in collate(views).items()}
        target = tuple(t.to(device) for t in visibility_targets(views, num_landmarks))
        logits, visibility = model(batch["xy"], batch["descriptors"], batch["mask"])
        if class_weight is not None:
            losses.append(float(loss_fn(logits, batch["labels"], class_weight, smoothing, visibility, target,
                                        visibility_weight)))
            weights.append(int(batch["mask"].sum()))
        for j, view in enumerate(views):
            res = make_result(logits[j, : len(view.xy)], visibility[j], num_landmarks)
            gt = view.labels
            fg = gt > 0
            correct += int((res.labels[fg] == gt[fg]).sum())
            labelled += int(fg.sum())
            bg_correct += int((res.labels[~fg] == 0).sum())
            bg_total += int((~fg).sum())
            if fg.any():
                n_images += 1
                ranked = res.ranked()
                top1 += int(len(ranked) > 0 and (gt == ranked[0] + 1).any())
                counts = (np.bincount(view.point_landmarks, minlength=num_landmarks)
                          if view.point_landmarks is not None and len(view.point_landmarks)
                          else np.bincount(gt[fg] - 1, minlength=num_landmarks))
                rec3 += int(counts.argmax() in ranked[:3])
    model.train(was_training)
    return {
        "loss": float(np.average(losses, weights=weights)) if losses else float("nan"),
        "keypoint_accuracy": correct / max(labelled, 1),
        "background_accuracy": bg_correct / max(bg_total, 1),
        "top1_precision": top1 / max(n_images, 1),
        "recall_at_3": rec3 / max(n_images, 1),
        "num_images": len(images),
    }


def lr_factor(step: int, total_steps: int, warmup_steps: int) -> float:
    """Linear warm-up over ``warmup_steps``, then cosine decay to 1% at ``total_steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min((step - warmup_steps) / max(total_steps - warmup_steps, 1), 1.0)
    return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * progress))


def make_optimizer(model: torch.nn.Module, conf: RecognizerConfig) -> torch.optim.Optimizer:
    """AdamW; no weight decay on biases, norms and the Fourier frequencies."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (decay if p.ndim >= 2 and "freqs" not in name else no_decay).append(p)
    return torch.optim.AdamW([{"params": decay, "weight_decay": conf.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=conf.lr)


class Trainer:
    """One training run (see the module docstring): build with the data, then :meth:`run`.

    ``conf``: the recognizer config (its ``cuda`` overrides already applied on a GPU);
    ``train`` / ``val``: the map images for the gradient steps / model selection; ``t0``:
    the ``time.perf_counter()`` the time limit counts from.
    """

    def __init__(self, conf: RecognizerConfig, train: list[TrainingImage], val: list[TrainingImage],
                 num_landmarks: int, dim: int, device: torch.device, t0: float,
                 descriptor_spec: DescriptorSpec | None = None):
        self.spec = descriptor_spec or infer_spec(np.concatenate([im.descriptors for im in train]))
        self.conf, self.train, self.val, self.num_landmarks, self.device = conf, train, val, num_landmarks, device
        self.t0 = t0
        torch.manual_seed(conf.seed)
        self.rng = np.random.default_rng(conf.seed)
        model_conf = {k: getattr(conf, k) for k in MODEL_KEYS} | {"descriptor_dim": dim, "num_landmarks": num_landmarks}
        self.model = LandmarkTransformer(model_conf).to(device).train()
        self.optimizer = make_optimizer(self.model, conf)
        self.class_weight = torch.ones(num_landmarks + 1, device=device)
        self.class_weight[0] = conf.background_weight
        self.lo, self.hi = (int(v) for v in conf.train_keypoints)
        self.augment = {**conf.augment, "min_keypoints": self.lo, "max_keypoints": self.hi}
        self.batch_size = min(conf.batch_size, len(train))
        self.steps_per_epoch = math.ceil(len(train) / self.batch_size)
        self.epochs = step_budget(conf, len(train), self.steps_per_epoch)
        self.total_steps = self.epochs * self.steps_per_epoch
        self.time_limit = float(conf.train_minutes) * 60 if conf.train_minutes else math.inf
        self.step = self.epoch = 0
        self.history: list[dict] = []
        self.best: dict = {"score": None, "state": None, "epoch": 0, "step": 0, "accuracy": None}
        self.gain = {"accuracy": -math.inf, "step": 0}  # the last validation that gained min_improvement
        self.smoothed: float | None = None  # running mean of the validation keypoint accuracy
        self.autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")

    def evaluate(self, images: list[TrainingImage]) -> dict:
        c = self.conf
        return evaluate(self.model, images, self.num_landmarks, c.max_keypoints, self.device, self.batch_size,
                        self.class_weight, c.label_smoothing, c.visibility_weight)

    def validate(self, record: dict) -> None:
        """Validate, add the metrics to ``record``, keep the best weights so far."""
        if not self.val:
            return
        metrics = self.evaluate(self.val)
        acc = metrics["keypoint_accuracy"]
        # A few validation images make a noisy accuracy (+-5 points from one validation to the
        # next on a 112-photo map): the weights kept and the patience follow its running mean.
        self.smoothed = acc if self.smoothed is None else (1 - VAL_EMA) * self.smoothed + VAL_EMA * acc
        record |= {"val_loss": metrics["loss"], "val_keypoint_accuracy": acc, "val_smoothed": self.smoothed}
        score = (self.smoothed, -metrics["loss"])
        if self.best["score"] is None or score > self.best["score"]:
            self.best.update(score=score, state=copy.deepcopy(self.model.state_dict()), epoch=record["epoch"],
                             step=self.step, accuracy=self.smoothed)
        if self.smoothed >= self.gain["accuracy"] + self.conf.min_improvement:
            self.gain = {"accuracy": self.smoothed, "step": self.step}

    def train_step(self, indices: np.ndarray) -> float:
        """One gradient step on augmented views of ``train[indices]``; returns the loss."""
        c, dev = self.conf, self.device
        n = int(self.rng.integers(self.lo, self.hi + 1))  # one size per batch: little padding
        views = [augmented_view(self.train[i], self.rng, self.augment, n, self.spec) for i in indices]
        batch = {k: v.to(dev, non_blocking=True) for k, v in collate(views).items()}
        target = tuple(t.to(dev) for t in visibility_targets(views, self.num_landmarks))
        for group in self.optimizer.param_groups:
            group["lr"] = c.lr * lr_factor(self.step, self.total_steps, c.warmup_steps)
        with self.autocast:
            logits, visibility = self.model(batch["xy"], batch["descriptors"], batch["mask"])
        loss = loss_fn(logits, batch["labels"], self.class_weight, c.label_smoothing, visibility, target,
                       c.visibility_weight)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        self.step += 1
        return loss.item()

    def batches(self) -> list[np.ndarray]:
        """One epoch's batches: the training images in a random order."""
        order = self.rng.permutation(len(self.train))
        return [order[start:start + self.batch_size] for start in range(0, len(order), self.batch_size)]

    def train_epoch(self) -> dict:
        """One epoch of :meth:`batches` (cut short at the time limit)."""
        losses = []
        for batch in self.batches():
            losses.append(self.train_step(batch))
            if time.perf_counter() - self.t0 > self.time_limit:
                break
        self.epoch += 1
        record = {"epoch": self.epoch, "step": self.step, "train_loss": float(np.mean(losses))}
        if self.step // int(self.conf.val_every) > (self.step - len(losses)) // int(self.conf.val_every):
            self.validate(record)
        self.history.append(record)
        return record

    def end_condition(self, short: bool = False) -> str:
        """What ends the run, in words (the log says it; ``short``: the progress line's)."""
        c = self.conf
        parts = [f"{self.total_steps} steps" + (f" ({c.epochs} epochs)" if c.epochs is not None else "")]
        if c.patience and self.val:
            parts.append(f"{c.patience} steps without +{100 * c.min_improvement:g} points" if short else
                         f"{c.patience} steps without +{100 * c.min_improvement:g} points of validation accuracy")
        if math.isfinite(self.time_limit):
            parts.append(f"{self.time_limit / 60:g} min")
        return " | ".join(parts) if short else "stops at " + ", or ".join(parts)

    def run(self) -> str:
        """Train until the step budget, the patience or the time limit runs out; leaves the
        best weights (as stored: fp16) in the model. Returns the stop reason."""
        c = self.conf
        stop_reason = "step budget" if c.epochs is None else "epochs"
        bar = track(total=self.total_steps, desc="recognizer steps")
        while self.epoch < self.epochs:
            record = self.train_epoch()
            bar.update(self.step - bar.n)
            best = self.best["accuracy"]
            bar.set_postfix({"loss": f"{record['train_loss']:.3f}",
                             "best val (running mean)": "-" if best is None else
                             f"{100 * best:.1f}% @ step {self.best['step']}",
                             "ends at": self.end_condition(short=True)})
            if time.perf_counter() - self.t0 > self.time_limit:
                stop_reason = "time limit"
                break
            if c.patience and self.best["score"] is not None and self.step - self.gain["step"] >= c.patience:
                stop_reason = "no improvement"
                break
        bar.close()
        if self.history and "val_loss" not in self.history[-1]:
            self.validate(self.history[-1])
        if self.best["state"] is not None:
            self.model.load_state_dict(self.best["state"])
        # Evaluate the weights as stored (fp16).
        self.model.load_state_dict({k: v.half().float() if v.is_floating_point() else v
                                    for k, v in self.model.state_dict().items()})
        return stop_reason

    def metrics(self, stop_reason: str, num_threads: int) -> dict:
        """Final validation and training-set metrics of the model, and the run's record."""
        final = self.evaluate(self.val) if self.val else None
        probe = self.train[:: max(1, len(self.train) // 32)]  # train accuracy on <= ~32 images (cost)
        train_eval = self.evaluate(probe)
        return {
            "num_landmarks": self.num_landmarks,
            "num_parameters": self.model.num_parameters(),
            "num_train_images": len(self.train),
            "num_val_images": len(self.val),
            "train_loss": self.history[-1]["train_loss"] if self.history else float("nan"),
            "train_keypoint_accuracy": train_eval["keypoint_accuracy"],
            "val_loss": final["loss"] if final else None,
            "val_keypoint_accuracy": final["keypoint_accuracy"] if final else None,
            "val_background_accuracy": final["background_accuracy"] if final else None,
            "val_top1_precision": final["top1_precision"] if final else None,
            "val_recall_at_3": final["recall_at_3"] if final else None,
            "epochs": self.epoch,
            "best_epoch": self.best["epoch"] if self.best["state"] is not None else self.epoch,
            "steps": self.step,
            "step_budget": self.total_steps,
            "best_step": self.best["step"] if self.best["state"] is not None else self.step,
            "stop_reason": stop_reason,
            "seconds": round(time.perf_counter() - self.t0, 2),
            "device": str(self.device),
            "num_threads": num_threads if self.device.type == "cpu" else None,
            "history": self.history,
        }


def main(conf: RecognizerConfig | dict | None, train_images: list[TrainingImage], num_landmarks: int,
         out_path: Path, device: str | None = None, descriptor_spec: DescriptorSpec | None = None) -> dict:
    """Train a recognizer on ``train_images`` (labels 0..num_landmarks) and write the
    checkpoint (model config, fp16 weights, metrics) to ``out_path``. ``device`` overrides
    ``conf.device``; ``descriptor_spec``: the extractor's declaration (the augmentation
    keeps descriptors in its space; default: read off the data). Returns the metrics (also
    stored in the checkpoint)."""
    conf = RecognizerConfig.of(conf, "recognizer")
    dev = resolve_device(device if device is not None else conf.device)
    if dev.type == "cuda":
        conf = RecognizerConfig.from_dict(deep_merge(conf.to_dict(), conf.cuda or {}), "recognizer.cuda")
    dim = check_training_images(train_images, num_landmarks)
    train_images = [im for im in train_images if len(im)]  # images without keypoints teach nothing
    t0 = time.perf_counter()
    with torch_settings(dev, conf.num_threads):
        train, val = split_train_val(train_images, conf.val_fraction, conf.seed)
        trainer = Trainer(conf, train, val, num_landmarks, dim, dev, t0, descriptor_spec)
        num_threads = torch.get_num_threads()
        logger.info("Training the landmark recognizer (%d landmarks, %d parameters) on %d map images "
                    "(+%d for validation), %s (%d threads); %s.", num_landmarks, trainer.model.num_parameters(),
                    len(train), len(val), dev, num_threads, trainer.end_condition())
        out = trainer.metrics(trainer.run(), num_threads)
    save_checkpoint(trainer.model, out_path, out)
    # No path: ``out_path`` is usually inside the map's staging folder, renamed once the map is complete.
    logger.info("Recognizer: stopped by %s after %d of %d steps (%.0f s), weights of step %d kept: on the "
                "validation images, keypoint accuracy %s, dominant landmark in the top 3 %s.", out["stop_reason"],
                out["steps"], out["step_budget"], out["seconds"], out["best_step"],
                _fmt(out["val_keypoint_accuracy"]), _fmt(out["val_recall_at_3"]))
    if out["val_recall_at_3"] is not None and out["val_recall_at_3"] < WEAK_RECALL_AT_3:
        logger.warning("The recognizer ranks the dominant landmark in its top 3 on only %s of the validation images "
                       "(< %s): localization will often fall back to retrieval (localize --mode auto).",
                       _fmt(out["val_recall_at_3"]), _fmt(WEAK_RECALL_AT_3))
    return out


# What localization needs of the recognizer is the landmarks in view ranked first: on every benchmark map
# (bench/results/build_*.json, features_*.json) the dominant landmark is in its top 3 for 95-100% of the
# validation images, while keypoint accuracy ranges from 74% to 94%.
WEAK_RECALL_AT_3 = 0.8


VAL_EMA = 0.3  # weight of the newest validation in the running mean of the validation accuracy


def step_budget(conf: RecognizerConfig, num_train: int, steps_per_epoch: int) -> int:
    """Epochs of a run on ``num_train`` images: ``conf.epochs`` if set, else enough for
    ``max(min_steps, steps_per_image * num_train)`` steps (the budget grows with the map)."""
    if conf.epochs is not None:
        return int(conf.epochs)
    steps = max(float(conf.min_steps), float(conf.steps_per_image) * num_train)
    return max(1, math.ceil(steps / max(steps_per_epoch, 1)))


def _fmt(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


# --- fine-tuning of a map's recognizer after ``update-map`` ---------------------------------


def grown_state(old: dict[str, torch.Tensor], new: dict[str, torch.Tensor], num_old: int) -> dict[str, torch.Tensor]:
    """The state of a recognizer over more landmarks: every weight of the ``old`` model (its
    ``num_old`` landmarks keep their ids, so their output rows: row ``l + 1`` of the
    classifier, row ``l`` of the visibility head); the rows of the landmarks added after
    them start from the mean of the old landmarks' rows plus the fresh initialisation of
    ``new`` (the larger model, built at random), which tells them apart."""
    out = {}
    for k, v in new.items():
        o = old[k].to(v.dtype)
        if o.shape == v.shape:
            out[k] = o.clone()
        elif o.shape[1:] == v.shape[1:] and o.shape[0] < v.shape[0]:  # output rows (and biases) of the landmarks
            out[k] = torch.cat([o, o[-num_old:].mean(0, keepdim=True) + v[o.shape[0]:]])
        else:
            raise PramlocError(f"recognizer weight {k}: {tuple(o.shape)} cannot grow into {tuple(v.shape)}")
    return out


class FineTuner(Trainer):
    """A :class:`Trainer` that starts from a trained model and draws each batch partly from
    the ``new`` training images (``new_share`` of it), the rest from the old ones (replay:
    what the model knew is not forgotten)."""

    def __init__(self, *args, new: set[str], new_share: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.new_idx = np.array([i for i, im in enumerate(self.train) if im.name in new], np.int64)
        self.old_idx = np.setdiff1d(np.arange(len(self.train)), self.new_idx)
        self.new_share = float(new_share)

    def load_grown(self, old_model: torch.nn.Module, num_old: int) -> None:
        self.model.load_state_dict(grown_state(old_model.state_dict(), self.model.state_dict(), num_old))

    def batches(self) -> list[np.ndarray]:
        """One epoch's batches: ``new_share`` of each from the new images, the rest from the old."""
        out = []
        k_new = int(round(self.batch_size * self.new_share)) if len(self.old_idx) else self.batch_size
        k_new = min(k_new, self.batch_size) if len(self.new_idx) else 0
        for _ in range(self.steps_per_epoch):
            parts = []
            if k_new:
                parts.append(self.rng.choice(self.new_idx, k_new, replace=len(self.new_idx) < k_new))
            if self.batch_size - k_new:
                parts.append(self.rng.choice(self.old_idx, self.batch_size - k_new,
                                             replace=len(self.old_idx) < self.batch_size - k_new))
            out.append(np.concatenate(parts))
        return out


def finetune(conf: RecognizerConfig, train_images: list[TrainingImage], num_landmarks: int, checkpoint: bytes,
             out_path: Path, new: set[str], steps: int, new_share: float = 0.5, device: str | None = None,
             descriptor_spec: DescriptorSpec | None = None, checkpoint_name: str = "recognizer.pt") -> dict:
    """Fine-tune a map's recognizer (``checkpoint``: its bytes) on ``train_images`` labelled
    over ``num_landmarks`` landmarks (those of the checkpoint first, with the same ids; the
    new ones get new output rows) for ``steps`` steps, batches drawn ``new_share`` from the
    images named in ``new`` and the rest from the others. ``conf``: the training settings
    (learning rate, warm-up, patience, validation; its model size is the checkpoint's).
    Writes the checkpoint to ``out_path``; returns the metrics (as :func:`main`, plus
    ``finetuned_from_landmarks``)."""
    from .model import Recognizer

    old = Recognizer.load(Path(checkpoint_name), device="cpu", data=checkpoint).model
    num_old = int(old.conf["num_landmarks"])
    if num_landmarks < num_old:
        raise PramlocError(f"{checkpoint_name}: the recognizer knows {num_old} landmarks, the map only {num_landmarks}")
    values = {**conf.to_dict(), **{k: old.conf[k] for k in MODEL_KEYS}, "epochs": None, "steps_per_image": 0.0,
              "min_steps": int(steps)}
    conf = RecognizerConfig.from_dict(values, "recognizer")
    dev = resolve_device(device if device is not None else conf.device)
    dim = check_training_images(train_images, num_landmarks)
    if dim != old.conf["descriptor_dim"]:
        raise PramlocError(f"{checkpoint_name}: the recognizer takes {old.conf['descriptor_dim']}-D descriptors, "
                           f"the new photos' features are {dim}-D")
    train_images = [im for im in train_images if len(im)]
    t0 = time.perf_counter()
    with torch_settings(dev, conf.num_threads):
        train, val = split_train_val(train_images, conf.val_fraction, conf.seed)
        trainer = FineTuner(conf, train, val, num_landmarks, dim, dev, t0, descriptor_spec, new=set(new),
                            new_share=new_share)
        trainer.load_grown(old, num_old)
        num_threads = torch.get_num_threads()
        logger.info("Fine-tuning the landmark recognizer (%d -> %d landmarks) on %d map images (%d new, +%d for "
                    "validation), %s (%d threads); %s.", num_old, num_landmarks, len(train), len(trainer.new_idx),
                    len(val), dev, num_threads, trainer.end_condition())
        out = trainer.metrics(trainer.run(), num_threads)
    out["finetuned_from_landmarks"] = num_old
    save_checkpoint(trainer.model, out_path, out)
    logger.info("Recognizer fine-tuned: stopped by %s after %d of %d steps (%.0f s): on the validation images, "
                "keypoint accuracy %s, dominant landmark in the top 3 %s.", out["stop_reason"], out["steps"],
                out["step_budget"], out["seconds"], _fmt(out["val_keypoint_accuracy"]), _fmt(out["val_recall_at_3"]))
    return out
