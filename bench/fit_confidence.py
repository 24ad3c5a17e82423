"""Fit the pose confidence (pramloc/confidence_model.json) once, on training data only.

    python bench/fit_confidence.py [--seed 0] [--refit]

Training data (bench/confidence_data.py): maps built from part of the 7-Scenes and
Strecha *map* splits, queried with the other part of those splits, as they are and as
hard variants with known ground truth (crops, 90 degree rotations, half resolution,
occlusion, dark / noise / blur, no intrinsics given), and the images of each scene against
the other scene's maps (every pose found there is wrong). No evaluation query is used.

Steps: localize every training query in auto mode (records with the confidence features
and the pose errors: bench/out/confidence/train_records.jsonl; ``--refit`` fits again from
them without localizing), fit a logistic model of P(within 50 cm / 5 degrees) on
:data:`pramloc.confidence.FEATURES`, pick the ``confident`` threshold (the lowest with an
out-of-fold training precision of at least :data:`PRECISION`, folds by query image), write
the model and
bench/results/confidence_fit.json (coefficients, training counts and metrics).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import confidence_data  # noqa: E402
from bench_degraded import degrade  # noqa: E402
from common import RESULTS, SCENES, stamp  # noqa: E402

RIGHT = (0.5, 5.0)  # the model's target: within 50 cm and 5 degrees
PRECISION = 0.995  # training precision (out of fold) of the confident flag
FOLDS = 5  # cross-validation folds, by query image (its variants stay together)
L2 = 1e-2  # ridge on the standardized weights
VARIANTS = ("crop", "rot90", "half", "occluded", "dark", "noise", "blur", "combined", "guess")
RECORDS = confidence_data.WORK / "train_records.jsonl"


# ---------------------------------------------------------------- query variants

def crop_camera(camera, x0: int, y0: int, w: int, h: int):
    """``camera`` (COLMAP, principal point from the image corner) of the crop of width
    ``w`` and height ``h`` at pixel (``x0``, ``y0``): the principal point moves."""
    from pramloc.geometry import Camera

    p = camera.params.copy()
    i = 1 if camera.model in ("SIMPLE_PINHOLE", "SIMPLE_RADIAL", "RADIAL") else 2
    p[i] -= x0
    p[i + 1] -= y0
    return Camera(camera.model, w, h, p)


def rot90(image: np.ndarray, camera, pose):
    """The image turned 90 degrees counter-clockwise (``np.rot90``) with its camera and
    world-to-camera pose: a pixel (u, v) goes to (v, W - u) (COLMAP's continuous pixels),
    so the camera frame turns by x' = y, y' = -x."""
    from pramloc.geometry import Camera, Pose

    p = camera.params.copy()
    if camera.model in ("SIMPLE_PINHOLE", "SIMPLE_RADIAL", "RADIAL"):
        p[1], p[2] = camera.params[2], camera.width - camera.params[1]
    else:
        p[0], p[1], p[2], p[3] = camera.params[1], camera.params[0], camera.params[3], camera.width - camera.params[2]
    turn = np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    return (np.ascontiguousarray(np.rot90(image)), Camera(camera.model, camera.height, camera.width, p),
            Pose.from_Rt(turn @ pose.R, turn @ pose.tvec))


def variant(kind: str, image: np.ndarray, camera, pose, rng: np.random.Generator):
    """(image (H', W') uint8, camera or None, world-to-camera pose) of one hard variant of a
    grayscale ``image`` with its known ``camera`` and ``pose`` (see :data:`VARIANTS`)."""
    h, w = image.shape
    if kind == "crop":  # 40-75% of each side, anywhere
        cw, ch = (int(w * rng.uniform(0.4, 0.75)), int(h * rng.uniform(0.4, 0.75)))
        x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        return np.ascontiguousarray(image[y0:y0 + ch, x0:x0 + cw]), crop_camera(camera, x0, y0, cw, ch), pose
    if kind == "rot90":
        return rot90(image, camera, pose)
    if kind == "half":
        small = cv2.resize(image, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
        return small, camera.scaled((w // 2) / w, (h // 2) / h), pose
    if kind == "occluded":  # a grey block over 35-60% of the image
        out = image.copy()
        bw, bh = int(w * rng.uniform(0.6, 0.8)), int(h * rng.uniform(0.6, 0.8))
        x0, y0 = int(rng.integers(0, w - bw + 1)), int(rng.integers(0, h - bh + 1))
        out[y0:y0 + bh, x0:x0 + bw] = 127
        return out, camera, pose
    if kind == "guess":  # no intrinsics given: estimated, focal length refined
        return image, None, pose
    return degrade(image, kind, rng), camera, pose


# ---------------------------------------------------------------- localization

def localize_all(seed: int, log=print) -> list[dict]:
    """Localize every training query (auto mode); one record per query: training map,
    variant, the log record's path / confidence features, and the pose errors (inf: no
    pose; a pose of another scene's image: wrong)."""
    from pramloc.config import load_config
    from pramloc.datasets import load_dataset
    from pramloc.evaluate import pose_errors
    from pramloc.localize import Localizer

    maps = confidence_data.build_maps()
    splits = confidence_data.training_splits()
    # Each map localized with its preset's settings, as a map built now keeps them (maps built
    # before presets had localization settings get the defaults otherwise).
    locs = {name: Localizer(path, "auto", load_config(SCENES[splits[name][0]][4]).localization)
            for name, path in maps.items()}
    records = []

    def run(map_name: str, qname: str, kind: str, image, camera, pose, same_scene: bool):
        r = locs[map_name].localize(image, camera, qname)
        rec = {"map": map_name, "query": qname, "variant": kind, "same_scene": same_scene, "path": r.path,
               "num_inliers": r.num_inliers, "features": r.confidence_features,
               "translation": None, "rotation_deg": None}
        if r.pose is not None and same_scene:
            rec["translation"], rec["rotation_deg"] = pose_errors(r.pose, pose)
        records.append(rec)

    for k, (name, (scene, _, queries)) in enumerate(splits.items()):
        kind, root, _, _, _ = SCENES[scene]
        ds = load_dataset(kind, root)
        others = [m for m, (s, _, _) in splits.items() if SCENES[s][0] != kind]
        for i, qname in enumerate(queries):
            rng = np.random.default_rng([seed, k, i])
            im = ds[qname]
            image = cv2.imread(str(ds.path(qname)), cv2.IMREAD_GRAYSCALE)
            run(name, qname, "original", ds.path(qname), im.camera, im.pose, True)
            # Strecha has few images: every variant; 7-Scenes: four of them, drawn.
            kinds = VARIANTS if kind == "strecha" else rng.choice(VARIANTS, 4, replace=False)
            for v in kinds:
                img, cam, pose = variant(str(v), image, im.camera, im.pose, rng)
                run(name, qname, str(v), img, cam, pose, True)
            # Against another scene's map: every third image, as it is and cropped.
            if kind == "strecha" or i % 3 == 0:
                for other in others:
                    run(other, qname, "other-scene", ds.path(qname), im.camera, None, False)
                    img, cam, _ = variant("crop", image, im.camera, im.pose, rng)
                    run(other, qname, "other-scene crop", img, cam, None, False)
            if i % 20 == 0:
                log(f"{name}: {i + 1}/{len(queries)} queries, {len(records)} records")
    return records


# ---------------------------------------------------------------- fitting

def is_right(rec: dict, right: tuple[float, float] = RIGHT) -> bool:
    return rec["translation"] is not None and rec["translation"] <= right[0] and rec["rotation_deg"] <= right[1]


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = L2, iters: int = 100):
    """Ridge logistic regression by Newton's method on standardized features.
    x (M, F), y (M,) in {0, 1}. Returns (mean (F,), scale (F,), weights (F,), bias)."""
    mean, scale = x.mean(0), x.std(0)
    scale = np.where(scale < 1e-9, 1.0, scale)
    z = np.concatenate([np.ones((len(x), 1)), (x - mean) / scale], 1)
    w = np.zeros(z.shape[1])
    reg = np.full(z.shape[1], l2 * len(x))
    reg[0] = 0.0  # no ridge on the bias
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-np.clip(z @ w, -50, 50)))
        grad = z.T @ (p - y) + reg * w
        hess = (z * (p * (1 - p))[:, None]).T @ z + np.diag(reg + 1e-9)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return mean, scale, w[1:], float(w[0])


def out_of_fold(x: np.ndarray, y: np.ndarray, groups: np.ndarray, folds: int = FOLDS) -> np.ndarray:
    """P(right) (M,) of each row predicted by a model fitted without its fold (rows of one
    ``groups`` value, e.g. one query image and its variants, share a fold)."""
    fold = np.unique(groups, return_inverse=True)[1] % folds
    p = np.zeros(len(y))
    for k in range(folds):
        mean, scale, w, b = fit_logistic(x[fold != k], y[fold != k])
        p[fold == k] = 1.0 / (1.0 + np.exp(-np.clip(b + ((x[fold == k] - mean) / scale) @ w, -50, 50)))
    return p


def pick_threshold(p: np.ndarray, y: np.ndarray, precision: float = PRECISION) -> float:
    """The lowest threshold (a multiple of 0.01 in [0.5, 0.99]) at which the poses at or
    above it are right at least ``precision`` of the time."""
    for t in np.round(np.arange(0.5, 0.995, 0.01), 2):
        sel = p >= t
        if sel.sum() and y[sel].mean() >= precision:
            return float(t)
    return 0.99


def fit(records: list[dict], seed: int) -> dict:
    from pramloc.confidence import FEATURES, ConfidenceModel

    posed = [r for r in records if r["path"] != "failed"]
    x = np.array([[r["features"][k] for k in FEATURES] for r in posed], np.float64)
    y = np.array([is_right(r) for r in posed], np.float64)
    mean, scale, weights, bias = fit_logistic(x, y)
    model = ConfidenceModel(FEATURES, mean, scale, weights, bias, 0.5, {})
    # The threshold from out-of-fold predictions: what a map the model has not seen gets.
    groups = np.array([f"{r['map']}|{r['query']}" for r in posed])
    p = out_of_fold(x, y, groups)
    model.threshold = pick_threshold(p, y)
    strict = np.array([is_right(r, (0.25, 2.0)) for r in posed])
    conf = p >= model.threshold
    p_in = model.predict(x)
    by_map = {}
    for r in records:
        by_map.setdefault(r["map"], {"queries": 0, "poses": 0, "right": 0})
        by_map[r["map"]]["queries"] += 1
        by_map[r["map"]]["poses"] += r["path"] != "failed"
        by_map[r["map"]]["right"] += is_right(r)
    metrics = {
        "queries": len(records), "poses": len(posed), "right": int(y.sum()), "wrong": int(len(y) - y.sum()),
        "confident": int(conf.sum()), "precision": round(float(y[conf].mean()), 4) if conf.any() else None,
        "recall_25cm_2deg": round(float(conf[strict].mean()), 4) if strict.any() else None,
        "recall_right": round(float(conf[y == 1].mean()), 4),
        "brier": round(float(np.mean((p - y) ** 2)), 4),
        "note": f"out-of-fold predictions ({FOLDS} folds by query image); in-sample below",
        "in_sample": {"confident": int((p_in >= model.threshold).sum()),
                      "precision": round(float(y[p_in >= model.threshold].mean()), 4),
                      "brier": round(float(np.mean((p_in - y) ** 2)), 4)},
        "reliability": [{"bin": [b / 10, (b + 1) / 10], "poses": int(sel.sum()),
                         "mean_confidence": round(float(p[sel].mean()), 4) if sel.any() else None,
                         "success": round(float(y[sel].mean()), 4) if sel.any() else None}
                        for b, sel in ((b, np.minimum((p * 10).astype(int), 9) == b) for b in range(10))],
        "variants": {v: sum(r["variant"] == v for r in records) for v in sorted({r["variant"] for r in records})},
        "by_map": by_map,
    }
    model.meta = {**stamp(), "target": f"pose within {RIGHT[0]} m and {RIGHT[1]} deg of the ground truth",
                  "threshold_rule": f"lowest threshold with out-of-fold training precision >= {PRECISION}",
                  "training": {name: {"scene": s, "map_images": len(db), "queries": len(q)}
                               for name, (s, db, q) in confidence_data.training_splits().items()},
                  "seed": seed, "l2": L2, "poses": len(posed), "right": int(y.sum())}
    model.save()
    report = {**stamp(), "model": model.to_dict(), "training": metrics}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "confidence_fit.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(metrics, indent=1))
    print("weights:", {k: round(float(w), 3) for k, w in zip(FEATURES, weights)}, "bias", round(bias, 3),
          "threshold", model.threshold)
    return report


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--refit", action="store_true", help="fit from the records of a previous run")
    a = ap.parse_args()
    if a.refit:
        recs = [json.loads(line) for line in RECORDS.read_text().splitlines()]
    else:
        recs = localize_all(a.seed)
        RECORDS.parent.mkdir(parents=True, exist_ok=True)
        RECORDS.write_text("".join(json.dumps(r) + "\n" for r in recs))
    fit(recs, a.seed)
