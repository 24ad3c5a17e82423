"""Recognition benchmark on query images never seen in training.

Ground truth (per query, from its true pose): the map's 3D points (the full triangulated
model of the build cache, each point labelled with its nearest landmark centre; the
stored map points if no cache) are projected; a point hidden behind a nearer point in
the same 8x8 px cell (depth more than 10% larger) is occluded; a query keypoint within
3 px of a visible projected point carries that point's landmark (the same labelling as
the recognizer's training labels, :func:`pramloc.landmarks.projected_labels`); a landmark
is visible when at least 10 of its points project into the image.

The recognizer and the baselines see what the localizer gives the recognizer: the
strongest ``recognition_keypoints`` (512) keypoints of each query.

Metrics: keypoint accuracy on labelled keypoints, top-1 precision (top-ranked landmark
visible), dominant-landmark recall@1/3/5, for the recognizer and two baselines:
``prior`` (landmarks ranked by the number of map images seeing them) and ``nn-vote``
(each keypoint's nearest map-point descriptor, ratio 0.9, votes for its landmark).
Also inference time per query at 500 / 1024 / 2048 keypoints.

    python bench/bench_recognition.py [--scenes 7scenes-interleaved 7scenes-block strecha]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import OUT, RESULTS, SCENES, stamp  # noqa: E402


def gt_points(map_dir: Path, m) -> tuple[np.ndarray, np.ndarray]:
    """(P, 3) points and (P,) landmark ids used for the ground truth."""
    import pycolmap

    from pramloc.build import cache_dir
    from pramloc.landmarks import nearest_landmark

    models = sorted(p for p in cache_dir(map_dir).glob("sfm-*") if (p / "points3D.bin").exists())
    if not models:
        return m.xyz.astype(np.float64), m.point_landmark
    rec = pycolmap.Reconstruction(str(models[-1]))
    xyz = np.array([p.xyz for p in rec.points3D.values()])
    return xyz, nearest_landmark(xyz, m.landmark_centers)


def ranking_metrics(ranked: np.ndarray, counts: np.ndarray) -> dict:
    visible = counts >= 10
    dominant = int(np.argmax(counts))
    return {"top1": bool(len(ranked) and visible[ranked[0]]),
            **{f"r@{k}": bool(dominant in ranked[:k]) for k in (1, 3, 5)}, "has_visible": bool(visible.any())}


def run(scene: str, map_dir: Path | None = None) -> dict:
    import torch

    from pramloc.datasets import load_dataset
    from pramloc.features import extract_path
    from pramloc.landmarks import projected_labels
    from pramloc.config import LocalizationConfig
    from pramloc.mapio import load_map
    from pramloc.matching import match
    from pramloc.recognition import Recognizer

    kind, root, _, qsplit, _ = SCENES[scene]
    map_dir = map_dir or OUT / "maps" / scene
    m = load_map(map_dir)
    if m.recognizer_path is None:
        raise SystemExit(f"{map_dir}: no recognizer")
    recog = Recognizer.load(m.recognizer_path)
    xyz, lm = gt_points(map_dir, m)
    L = m.num_landmarks
    prior = np.argsort(-np.array([len(i) for i in m.landmark_images()]), kind="stable")
    queries = load_dataset(kind, root, qsplit)
    rows = {"recognizer": [], "prior": [], "nn-vote": []}
    kp_correct = {"recognizer": [0, 0], "nn-vote": [0, 0]}
    n = LocalizationConfig().recognition_keypoints  # as the localizer: the strongest keypoints
    for im in queries.images:
        f = extract_path(queries.path(im.name), m.manifest["feature"])
        f = {**f, "keypoints": f["keypoints"][:n], "descriptors": f["descriptors"][:n]}
        labels, counts = projected_labels(im.camera, im.pose, xyz, lm, f["keypoints"].astype(np.float64), L)
        if counts.max() < 10:
            continue
        r = recog.recognize(f["keypoints"], f["descriptors"], tuple(f["image_size"]))
        rows["recognizer"].append(ranking_metrics(r.ranked(), counts))
        rows["prior"].append(ranking_metrics(prior, counts))
        mm, _ = match(f["descriptors"], m.descriptors, ratio=0.9, mutual=False)
        nn_labels = np.zeros(len(labels), np.int64)
        nn_labels[mm[:, 0]] = m.point_landmark[mm[:, 1]] + 1
        votes = np.bincount(nn_labels[nn_labels > 0] - 1, minlength=L)
        rows["nn-vote"].append(ranking_metrics(np.argsort(-votes, kind="stable")[votes[np.argsort(-votes, kind="stable")] > 0], counts))
        fg = labels > 0
        for name, pred in (("recognizer", r.labels), ("nn-vote", nn_labels)):
            kp_correct[name][0] += int((pred[fg] == labels[fg]).sum())
            kp_correct[name][1] += int(fg.sum())
    report = {**stamp(), "scene": scene, "queries_evaluated": len(rows["recognizer"]), "landmarks": L, "methods": {}}
    for name, rs in rows.items():
        agg = {k: round(float(np.mean([r[k] for r in rs])), 4) for k in ("top1", "r@1", "r@3", "r@5")}
        if name in kp_correct:
            agg["keypoint_accuracy"] = round(kp_correct[name][0] / max(kp_correct[name][1], 1), 4)
        report["methods"][name] = agg
    # Inference time per query at a given number of keypoints (real keypoints, repeated if needed).
    f = extract_path(queries.path(queries.images[0].name), {**m.manifest["feature"], "max_keypoints": 4096})
    times = {}
    for n in (500, 1024, 2048):
        idx = np.arange(n) % len(f["keypoints"])
        args = (f["keypoints"][idx], f["descriptors"][idx], tuple(f["image_size"]))
        recog.recognize(*args)
        ts = []
        for _ in range(30):
            t = time.perf_counter()
            recog.recognize(*args)
            ts.append(time.perf_counter() - t)
        times[n] = round(float(np.median(ts)) * 1000, 2)
    report["inference_ms"] = times
    report["torch_threads"] = torch.get_num_threads()
    report["recognizer"] = m.manifest.get("recognizer", {})
    report["checkpoint_bytes"] = m.recognizer_path.stat().st_size
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"recognition_{scene}.json").write_text(json.dumps(report, indent=2))
    print(scene, json.dumps({k: report[k] for k in ("queries_evaluated", "landmarks", "methods", "inference_ms")}))
    return report


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenes", nargs="+", default=["7scenes-interleaved", "strecha"], choices=list(SCENES))
    a = ap.parse_args()
    for s in a.scenes:
        run(s)
