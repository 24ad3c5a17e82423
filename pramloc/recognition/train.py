"""Training of the landmark recognizer on the labelled keypoints of the map images.

A seeded share of the map images is held out for validation (model selection and early
stopping). Each step sees ``batch_size`` augmented views (:func:`.data.augmented_view`);
the loss is cross-entropy with label smoothing and a down-weighted background class on
the keypoints, plus (weight ``visibility_weight``) the cross-entropy of the visibility head
against the share of each landmark among the map points visible in the view.
AdamW, linear warm-up then cosine decay. The run stops after ``epochs`` epochs, when the
time budget ``train_minutes`` is spent, or after ``patience`` steps without a better
validation accuracy (the best weights are kept). With ``epochs: null`` the schedule is
fitted to the time budget from the measured speed of the first epochs (then the run is
not bit-exact reproducible, as it depends on the machine's speed; set ``epochs`` for that).
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
from ..config import deep_merge
from ..progress import track
from .data import (IGNORE_INDEX, TrainingImage, augmented_view, check_training_images, collate, plain_view,
                   split_train_val, visibility_targets)
from .model import LandmarkTransformer, make_result, resolve_device, save_checkpoint

default_conf = {
    # model (CPU-sized; see "cuda" below)
    "width": 96,
    "layers": 2,
    "heads": 2,
    "mlp_ratio": 2,
    "dropout": 0.0,
    "fourier_sigma": 10.0,      # init std of the positional Fourier frequencies (per normalised unit)
    # data
    "max_keypoints": 1024,      # keypoints of a validation image (the first ones)
    "train_keypoints": [128, 384],  # range of the number of keypoints of a training view
    "val_fraction": 0.1,        # share of the map images held out for validation
    "val_every": 2,             # epochs between validations (and at the end)
    # optimisation
    "train_minutes": 9.5,       # time budget (hard stop)
    "epochs": None,             # null: as many as fit in train_minutes
    "max_epochs": 2000,
    "batch_size": 8,
    "lr": 3e-3,
    "weight_decay": 0.05,
    "warmup_steps": 30,
    "label_smoothing": 0.1,
    "background_weight": 0.1,   # loss weight of the background class (landmarks: 1)
    "visibility_weight": 1.0,   # loss weight of the landmark-visibility head
    "patience": 1000,           # steps without a better validation accuracy before stopping (null: off);
                                # steps, not epochs: an epoch of a 12-image map is 2 steps
    "augment": {"scale": 0.35, "rotation": 15.0, "aspect": 0.1, "shift": 0.2, "jitter": 0.004,
                "descriptor_noise": 0.03},
    "seed": 0,
    "device": "cpu",            # cpu | cuda | auto (cuda if available)
    "num_threads": None,        # CPU threads (null: the idle cores, 1..8, see default_threads)
    # overrides when training on a GPU: a larger model and views
    "cuda": {"width": 256, "layers": 4, "heads": 4, "batch_size": 16, "train_keypoints": [256, 1024]},
}

MODEL_KEYS = ("width", "layers", "heads", "mlp_ratio", "dropout", "fourier_sigma")


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


def make_optimizer(model: torch.nn.Module, conf: dict) -> torch.optim.Optimizer:
    """AdamW; no weight decay on biases, norms and the Fourier frequencies."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (decay if p.ndim >= 2 and "freqs" not in name else no_decay).append(p)
    return torch.optim.AdamW([{"params": decay, "weight_decay": conf["weight_decay"]},
                              {"params": no_decay, "weight_decay": 0.0}], lr=conf["lr"])


def main(conf: dict, train_images: list[TrainingImage], num_landmarks: int, out_path: Path,
         device: str | None = None) -> dict:
    """Train a recognizer on ``train_images`` (labels 0..num_landmarks) and write the
    checkpoint (model config, fp16 weights, metrics) to ``out_path``. ``device`` overrides
    ``conf['device']``. Returns the metrics (also stored in the checkpoint)."""
    unknown = sorted(set(conf or {}) - set(default_conf))
    if unknown:
        logger.warning("Recognizer config: unknown key(s) %s ignored (known: see recognition/train.py).",
                       ", ".join(unknown))
    conf = deep_merge(default_conf, conf or {})
    dev = resolve_device(device if device is not None else conf["device"])
    if dev.type == "cuda":
        conf = deep_merge(conf, conf.get("cuda") or {})
    dim = check_training_images(train_images, num_landmarks)
    train_images = [im for im in train_images if len(im)]  # images without keypoints teach nothing
    budget = float(conf["train_minutes"]) * 60
    t0 = time.perf_counter()
    with torch_settings(dev, conf["num_threads"]):
        torch.manual_seed(conf["seed"])
        rng = np.random.default_rng(conf["seed"])
        train, val = split_train_val(train_images, conf["val_fraction"], conf["seed"])
        model_conf = {k: conf[k] for k in MODEL_KEYS} | {"descriptor_dim": dim, "num_landmarks": num_landmarks}
        model = LandmarkTransformer(model_conf).to(dev).train()
        optimizer = make_optimizer(model, conf)
        class_weight = torch.ones(num_landmarks + 1, device=dev)
        class_weight[0] = conf["background_weight"]
        lo, hi = (int(v) for v in conf["train_keypoints"])
        aug = {**conf["augment"], "min_keypoints": lo, "max_keypoints": hi}
        batch_size = min(conf["batch_size"], len(train))
        steps_per_epoch = math.ceil(len(train) / batch_size)
        fixed_epochs = conf["epochs"] is not None
        epochs = int(conf["epochs"]) if fixed_epochs else int(conf["max_epochs"])
        num_threads = torch.get_num_threads()
        logger.info("Training the landmark recognizer (%d landmarks, %d parameters) on %d map images "
                    "(+%d for validation), %s (%d threads), budget %.1f min.", num_landmarks,
                    model.num_parameters(), len(train), len(val), dev, num_threads, budget / 60)

        def evaluate_val() -> dict | None:
            if not val:
                return None
            return evaluate(model, val, num_landmarks, conf["max_keypoints"], dev, batch_size,
                            class_weight, conf["label_smoothing"], conf["visibility_weight"])

        best: dict = {"score": None, "state": None, "epoch": 0, "step": 0}

        def validate(record: dict) -> None:
            """Validate, add the metrics to ``record``, keep the best weights so far."""
            metrics = evaluate_val()
            if metrics is None:
                return
            record |= {"val_loss": metrics["loss"], "val_keypoint_accuracy": metrics["keypoint_accuracy"]}
            score = (metrics["keypoint_accuracy"], -metrics["loss"])
            if best["score"] is None or score > best["score"]:
                best.update(score=score, state=copy.deepcopy(model.state_dict()), epoch=record["epoch"], step=step)

        history, step, epoch, stop_reason = [], 0, 0, "epochs"
        bar = track(total=epochs, desc="recognizer")
        autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=dev.type == "cuda")
        while epoch < epochs:
            order = rng.permutation(len(train))
            losses = []
            for start in range(0, len(order), batch_size):
                n = int(rng.integers(lo, hi + 1))  # one size per batch: little padding
                views = [augmented_view(train[i], rng, aug, n) for i in order[start:start + batch_size]]
                batch = {k: v.to(dev, non_blocking=True) for k, v in collate(views).items()}
                target = tuple(t.to(dev) for t in visibility_targets(views, num_landmarks))
                for group in optimizer.param_groups:
                    group["lr"] = conf["lr"] * lr_factor(step, epochs * steps_per_epoch, conf["warmup_steps"])
                with autocast:
                    logits, visibility = model(batch["xy"], batch["descriptors"], batch["mask"])
                loss = loss_fn(logits, batch["labels"], class_weight, conf["label_smoothing"], visibility, target,
                               conf["visibility_weight"])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                losses.append(loss.item())
                step += 1
                if time.perf_counter() - t0 > budget:
                    break
            epoch += 1
            record = {"epoch": epoch, "train_loss": float(np.mean(losses))}
            if epoch % int(conf["val_every"]) == 0:
                validate(record)
            history.append(record)
            elapsed = time.perf_counter() - t0
            if not fixed_epochs:  # fit the schedule to the budget from the mean epoch time so far
                epochs = max(epoch, min(int(conf["max_epochs"]), int(budget / (elapsed / epoch))))
                bar.total = epochs
            bar.update(1)
            bar.set_postfix({k: f"{v:.3f}" for k, v in record.items() if k != "epoch"})
            if elapsed > budget:
                stop_reason = "time budget"
                break
            if conf["patience"] and best["score"] is not None and step - best["step"] >= conf["patience"]:
                stop_reason = "early stopping"
                break
        bar.close()
        if history and "val_loss" not in history[-1]:
            validate(history[-1])
        if best["state"] is not None:
            model.load_state_dict(best["state"])
        # Evaluate the weights as stored (fp16).
        model.load_state_dict({k: v.half().float() if v.is_floating_point() else v
                               for k, v in model.state_dict().items()})
        final = evaluate_val()
        probe = train[:: max(1, len(train) // 32)]  # train accuracy on <= ~32 images (cost)
        train_eval = evaluate(model, probe, num_landmarks, conf["max_keypoints"], dev, batch_size,
                              class_weight, conf["label_smoothing"], conf["visibility_weight"])
    seconds = time.perf_counter() - t0
    out = {
        "num_landmarks": num_landmarks,
        "num_parameters": model.num_parameters(),
        "num_train_images": len(train),
        "num_val_images": len(val),
        "train_loss": history[-1]["train_loss"] if history else float("nan"),
        "train_keypoint_accuracy": train_eval["keypoint_accuracy"],
        "val_loss": final["loss"] if final else None,
        "val_keypoint_accuracy": final["keypoint_accuracy"] if final else None,
        "val_background_accuracy": final["background_accuracy"] if final else None,
        "val_top1_precision": final["top1_precision"] if final else None,
        "val_recall_at_3": final["recall_at_3"] if final else None,
        "epochs": epoch,
        "best_epoch": best["epoch"] if best["state"] is not None else epoch,
        "steps": step,
        "stop_reason": stop_reason,
        "seconds": round(seconds, 2),
        "device": str(dev),
        "num_threads": num_threads if dev.type == "cpu" else None,
        "history": history,
    }
    save_checkpoint(model, out_path, out)
    logger.info("Recognizer: val keypoint accuracy %s, top-1 precision %s after %d epochs (%.0f s) -> %s",
                _fmt(out["val_keypoint_accuracy"]), _fmt(out["val_top1_precision"]), epoch, seconds, out_path)
    return out


def _fmt(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"
