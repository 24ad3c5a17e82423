"""Is the pose confidence calibrated? Every scene with ground truth, localized in auto mode.

    python bench/bench_confidence.py [--scenes ...] [--map SCENE=MAP_DIR ...]

Scenes: 7-Scenes interleaved and block, Strecha (their query splits against the maps of
bench/bench_build.py, bench/out/maps/<scene>), South Building (its 16 queries against the
map built from the reference poses of its 112 map photos, bench/out/photos/maps/reference112
as bench/bench_photos.py builds it; built here when missing), and the 7-Scenes interleaved
queries made dark, noisy and blurred (bench/bench_degraded.py's copies, seed 0).

Per scene: poses, poses flagged confident, precision (share of the confident poses within
50 cm / 5 degrees; South Building: 0.5 units, its reference model having no metric scale),
recall (share of the poses within 25 cm / 2 degrees that are flagged confident); the block
split against both its ground truth and the poses refined on the images
(bench/bench_gt_check.py's map-held poses, bench/out/gt_check/). Writes
bench/results/confidence.json, and the reliability diagram docs/confidence_reliability.png. Per-query records:
bench/out/confidence/eval/<scene>.jsonl (``--reuse``: the poses and features of a previous
run, scored with the current model; ``--localize-only``: records without a model).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import DATA, OUT, RESULTS, ROOT, SCENES, map_held_poses, stamp  # noqa: E402

SOUTH = DATA / "south_building"
PRECISE, CORRECT = (0.25, 2.0), (0.5, 5.0)  # recall's and precision's thresholds (metres or units, degrees)
DEGRADED = ("dark", "noise", "blur")
ALL = ("7scenes-interleaved", "7scenes-block", "strecha", "south-building") + tuple(f"7scenes-interleaved-{d}"
                                                                                     for d in DEGRADED)
FIGURE = ROOT / "docs" / "confidence_reliability.png"
RECORDS = OUT / "confidence" / "eval"  # <scene>.jsonl: per query, its path, features, confidence and errors


def south_building_map() -> Path:
    """The South Building map from the reference poses of the 112 map photos (outdoor
    preset), as bench/bench_photos.py's ``reference`` step builds it; built when missing."""
    from pramloc import build
    from pramloc.config import load_config
    from pramloc.datasets import load_colmap
    from pramloc.parallel import num_cores

    out = OUT / "photos" / "maps" / "reference112"
    if not (out / "manifest.json").exists():
        split = OUT / "photos" / "reference112_db.txt"
        split.parent.mkdir(parents=True, exist_ok=True)
        split.write_text((SOUTH / "splits/db.txt").read_text())
        build.main(load_config("outdoor"), load_colmap(SOUTH / "images", SOUTH / "reference", split), out,
                   overwrite=True, workers=num_cores())
    return out


def scene_queries(scene: str) -> tuple[list[tuple[str, Path, object]], dict, dict]:
    """(queries as (name, path, camera or None), ground truth name -> Pose, second ground
    truth (the block split's map-held poses, else {}))."""
    from pramloc.datasets import load_dataset
    from pramloc.evaluate import load_ground_truth
    from pramloc.localize import query_list

    if scene == "south-building":
        gt, _ = load_ground_truth(gt_model=SOUTH / "reference", queries=SOUTH / "splits/query.txt")
        return query_list(images=SOUTH / "images", queries=SOUTH / "splits/query.txt"), gt, {}
    if scene.startswith("7scenes-interleaved-"):
        import bench_degraded

        qs = bench_degraded.degraded_queries(scene.rsplit("-", 1)[1], seed=0)
    else:
        kind, root, _, qsplit, _ = SCENES[scene]
        qs = load_dataset(kind, root, qsplit)
    gt = {im.name: im.pose for im in qs.images}
    second = {}
    if scene == "7scenes-block":
        second = map_held_poses(scene)
        if not second:
            raise SystemExit("7scenes-block: no map-held poses; run bench/bench_gt_check.py first")
    return [(im.name, qs.path(im.name), im.camera) for im in qs.images], gt, second


def base_scene(scene: str) -> str:
    """The scene whose map a scene's queries are localized against (degraded copies: theirs)."""
    return "7scenes-interleaved" if scene.startswith("7scenes-interleaved-") else scene


def map_of(scene: str, maps: dict[str, Path]) -> Path:
    """``scene``'s map: given in ``maps`` (by scene or by its base scene), else the default."""
    given = maps.get(scene) or maps.get(base_scene(scene))
    if given:
        return given
    if scene == "south-building":
        return south_building_map()
    return OUT / "maps" / base_scene(scene)


def localize_scene(scene: str, map_dir: Path) -> list[dict]:
    """Per query: name, path, confidence, confident, inliers and the pose errors against the
    ground truth (and the second one; None: no pose)."""
    from pramloc.evaluate import pose_errors
    from pramloc.localize import Localizer

    queries, gt, second = scene_queries(scene)
    loc = Localizer(map_dir, "auto")
    out = []
    for name, path, camera in queries:
        r = loc.localize(path, camera, name)
        rec = {"scene": scene, "map": str(map_dir), "name": name, "path": r.path, "confidence": r.confidence, "confident": r.confident,
               "num_inliers": r.num_inliers, "features": r.confidence_features,
               "time_confidence_ms": r.times_ms.get("confidence")}
        for key, ref in (("gt", gt), ("second", second)):
            if ref and r.pose is not None and name in ref:
                rec[key] = pose_errors(r.pose, ref[name])
        out.append(rec)
    return out


def within(err, thr) -> bool:
    return err is not None and err[0] <= thr[0] and err[1] <= thr[1]


def table_row(recs: list[dict], key: str = "gt") -> dict:
    """Poses, confident, precision (confident within :data:`CORRECT`) and recall (within
    :data:`PRECISE` and confident) of ``recs`` against ground truth ``key``."""
    posed = [r for r in recs if r["path"] != "failed"]
    conf = [r for r in posed if r["confident"]]
    precise = [r for r in posed if within(r.get(key), PRECISE)]
    correct_conf = sum(within(r.get(key), CORRECT) for r in conf)
    return {"queries": len(recs), "poses": len(posed), "confident": len(conf),
            "correct_poses": sum(within(r.get(key), CORRECT) for r in posed),
            "precise_poses": len(precise),
            "precision": round(correct_conf / len(conf), 4) if conf else None,
            "wrong_confident": len(conf) - correct_conf,
            "recall": round(sum(r["confident"] for r in precise) / len(precise), 4) if precise else None,
            "precise_not_confident": [r["name"] for r in precise if not r["confident"]]}


def reliability(recs: list[dict], bins: int = 10) -> list[dict]:
    """Per bin of predicted confidence: poses, mean confidence, share within :data:`CORRECT`."""
    posed = [r for r in recs if r["path"] != "failed" and r["confidence"] is not None]
    p = np.array([r["confidence"] for r in posed])
    ok = np.array([within(r.get("gt"), CORRECT) for r in posed], float)
    idx = np.minimum((p * bins).astype(int), bins - 1)
    return [{"bin": [b / bins, (b + 1) / bins], "poses": int((idx == b).sum()),
             "mean_confidence": round(float(p[idx == b].mean()), 4) if (idx == b).any() else None,
             "success": round(float(ok[idx == b].mean()), 4) if (idx == b).any() else None}
            for b in range(bins)]


def draw(rel: list[dict], threshold: float, path: Path, title: str, training: list[dict] | None = None) -> None:
    """The reliability diagram of bins ``rel`` (:func:`reliability`; ``training``: the same
    bins of the training poses' out-of-fold predictions, drawn beside) with the threshold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, axh) = plt.subplots(2, 1, figsize=(6, 7), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfectly calibrated")
    xs = [b["mean_confidence"] for b in rel if b["poses"]]
    ys = [b["success"] for b in rel if b["poses"]]
    ax.plot(xs, ys, "o-", color="C0", label="evaluation queries (all scenes)")
    if training:
        ax.plot([b["mean_confidence"] for b in training if b["poses"]], [b["success"] for b in training if b["poses"]],
                "s:", color="C2", alpha=0.8, label="training poses (out-of-fold)")
    for b in rel:
        if b["poses"]:
            ax.annotate(str(b["poses"]), (b["mean_confidence"], b["success"]), textcoords="offset points",
                        xytext=(4, -12), fontsize=8)
    ax.axvline(threshold, color="C3", lw=1, label=f"confident threshold {threshold:g}")
    ax.set_ylabel("share of poses within 50 cm / 5 deg")
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title, fontsize=9)
    ax.legend(loc="upper left", fontsize=8)
    centers = [(b["bin"][0] + b["bin"][1]) / 2 for b in rel]
    axh.bar(centers, [b["poses"] for b in rel], width=0.09, color="C0", label="evaluation")
    if training:
        axh.step([b["bin"][0] for b in training] + [1.0], [b["poses"] for b in training] + [training[-1]["poses"]],
                 where="post", color="C2", label="training")
        axh.legend(fontsize=8, loc="upper left")
    axh.set_yscale("log")
    axh.set_xlabel("predicted confidence (bin)")
    axh.set_ylabel("poses")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def rescored(path: Path, model) -> list[dict]:
    """The records of a previous run, scored with ``model`` (the poses and their features do
    not depend on it)."""
    from pramloc.confidence import FEATURES, score

    out = []
    for line in path.read_text().splitlines():
        r = json.loads(line)
        if r["path"] != "failed":
            c, r["confident"] = score(np.array([r["features"][k] for k in FEATURES]), model)
            r["confidence"] = round(c, 4)
        out.append(r)
    return out


def run(scenes: list[str], maps: dict[str, Path], reuse: bool = False, localize_only: bool = False) -> dict | None:
    from pramloc.confidence import shipped_model

    model = shipped_model()
    if model is None and not localize_only:
        raise SystemExit("no confidence model shipped: run bench/fit_confidence.py first (or --localize-only)")
    records = {}
    for s in scenes:
        path = RECORDS / f"{s}.jsonl"
        if reuse and path.exists():
            records[s] = rescored(path, model) if model is not None else None
            continue
        map_dir = map_of(s, maps)
        records[s] = localize_scene(s, map_dir)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r) + "\n" for r in records[s]))
        print(f"{s}: {len(records[s])} queries against {map_dir}", flush=True)
    if localize_only:
        return None
    table = {}
    for s in scenes:
        table[s] = table_row(records[s])
        if s == "7scenes-block":
            table[f"{s} (vs refined poses)"] = table_row(records[s], "second")
    everything = [r for s in scenes for r in records[s]]
    rel = reliability(everything)
    times = [r["time_confidence_ms"] for r in everything if r["time_confidence_ms"] is not None]
    report = {**stamp(), "model": {"threshold": model.threshold, "fitted": model.meta.get("date"),
                                   "commit": model.meta.get("commit")},
              "criteria": {"precision": f"confident poses within {CORRECT[0]} m (units) / {CORRECT[1]} deg",
                           "recall": f"poses within {PRECISE[0]} m (units) / {PRECISE[1]} deg flagged confident"},
              "maps": {s: records[s][0].get("map", "?") if records[s] else None for s in scenes},
              "table": table, "reliability": rel,
              "confidence_time_ms": {"median": round(float(np.median(times)), 3),
                                     "p90": round(float(np.percentile(times, 90)), 3)} if times else None}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "confidence.json").write_text(json.dumps(report, indent=2))
    fit = RESULTS / "confidence_fit.json"
    training = json.loads(fit.read_text())["training"].get("reliability") if fit.exists() else None
    draw(rel, model.threshold, FIGURE,
         f"pramloc pose confidence: {len(everything)} evaluation queries of {len(scenes)} scene sets,\n"
         f"{report['date']}, commit {report['commit']}", training)
    print(markdown(report))
    return report


def markdown(report: dict) -> str:
    """The table (per scene: queries, poses, confident, precision, recall) and the
    reliability bins of a report, as Markdown (docs/CONFIDENCE.md)."""
    fmt = lambda v: "-" if v is None else f"{100 * v:.1f}%"  # noqa: E731
    lines = ["| scene | queries | poses | confident | precision (confident within 50 cm / 5°) "
             "| recall (within 25 cm / 2° and confident) | wrong and confident |", "|---|---|---|---|---|---|---|"]
    for s, row in report["table"].items():
        lines.append(f"| {s} | {row['queries']} | {row['poses']} | {row['confident']} | {fmt(row['precision'])} "
                     f"({row['confident'] - row['wrong_confident']}/{row['confident']}) | {fmt(row['recall'])} "
                     f"({row['precise_poses'] - len(row['precise_not_confident'])}/{row['precise_poses']}) "
                     f"| {row['wrong_confident']} |")
    lines += ["", "| predicted confidence | poses | mean confidence | within 50 cm / 5° |", "|---|---|---|---|"]
    for b in report["reliability"]:
        if b["poses"]:
            lines.append(f"| {b['bin'][0]:.1f}-{b['bin'][1]:.1f} | {b['poses']} | {b['mean_confidence']:.3f} "
                         f"| {fmt(b['success'])} |")
    lines.append(f"\n{report['date']}, commit {report['commit']}, {report['machine']}; "
                 f"threshold {report['model']['threshold']:g}")
    return "\n".join(lines)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenes", nargs="+", default=list(ALL), choices=ALL)
    ap.add_argument("--map", nargs="*", default=[], help="SCENE=MAP_DIR: another map for a scene")
    ap.add_argument("--localize-only", action="store_true", help="write the records only (no model needed)")
    ap.add_argument("--reuse", action="store_true",
                    help="reuse the poses and features of scenes already localized, scored with the current model")
    a = ap.parse_args()
    run(a.scenes, {k: Path(v) for k, v in (m.split("=", 1) for m in a.map)}, a.reuse, a.localize_only)
