"""Global-descriptor benchmark (issue 26), after the Deep Visual Geo-localization Benchmark:
every retrieval method fitted on the same map's images, the same queries described, and
recall@1/5/10, time per image, descriptor bytes per image and fit (vocabulary/training)
time per method; plus the recognizer's landmark ranking turned into an image ranking.

    python bench/bench_retrieval.py [--scenes 7scenes-block ...] [--methods vlad anyloc:xfeat ...]
                                    [--maps DIR] [--localize]

A map image is a *positive* for a query when it shares at least 20% of the query's
visible map points: the map's 3D points that project inside the image, in front of its
camera, face it (its ray to the point within 60 degrees of the point's mean viewing
direction from the map images observing it) and are not hidden by nearer points (a depth
buffer of the points, 16 px cells splatted over their 3 x 3 neighbours, 10% depth
tolerance), under the ground-truth pose for the query and the map pose for the map image.
(The map images' own observations are too sparse for the rule: a 7-Scenes map image
observes ~590 map points, a query holds ~4,600 in its frustum and still ~1,300 after
open3d's hidden point removal, so no map image would reach 20%.) Queries without a
positive count as misses.

``vlad`` is the map's stored index (as ``localize`` uses it; fit time from the manifest);
the dense methods are fitted on the map images here, without rebuilding the map.
``--localize`` then localizes the queries in ``--mode retrieval`` with the map's index and
with the best method's (the highest recall@1) swapped in, interleaved query by query.
Writes bench/results/retrieval_<scene>.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import DATA, OUT, RESULTS, SCENES, localize_in_turn, stamp  # noqa: E402

SOUTH = DATA / "south_building"
ALL_SCENES = {**SCENES, "south-building": ("colmap", SOUTH, None, SOUTH / "splits/query.txt", "outdoor")}
MAP_DIRS = {"south-building": Path("photos/maps/reference112")}  # relative to --maps (bench/out)
MIN_SHARE = 0.2
MAX_FACING_DEG = 60.0
CELL = 16              # px, depth-buffer cells (a 640x480 image: 40 x 30)
DEPTH_TOLERANCE = 0.1  # a point up to 10% deeper than its cells' nearest is not hidden
RECALL_AT = (1, 5, 10)
DEFAULT_METHODS = ["vlad", "gem:xfeat", "anyloc:xfeat", "supervlad:xfeat", "landmark-vlad:xfeat",
                   "gem:disk", "anyloc:disk", "supervlad:disk", "landmark-vlad:disk"]


def load_queries(scene: str):
    from pramloc.datasets import load_dataset
    from pramloc.datasets.colmap import load_colmap

    kind, root, _, qsplit, _ = ALL_SCENES[scene]
    if kind == "colmap":
        return load_colmap(root / "images", root / "reference", qsplit)
    return load_dataset(kind, root, qsplit)


def facing_directions(m) -> np.ndarray:
    """(P, 3) unit mean viewing direction of each map point from the map images observing it."""
    xyz = np.asarray(m.xyz, np.float64)
    obs_img = np.repeat(np.arange(len(m.image_names)), np.diff(m.image_offsets))
    obs_pt = np.asarray(m.image_points, np.int64)
    centers = np.stack([p.center for p in m.poses])
    rays = centers[obs_img] - xyz[obs_pt]
    rays /= np.linalg.norm(rays, axis=1, keepdims=True)
    mean_dir = np.zeros_like(xyz)
    np.add.at(mean_dir, obs_pt, rays)
    return mean_dir / np.maximum(np.linalg.norm(mean_dir, axis=1, keepdims=True), 1e-12)


def visible_points(xyz: np.ndarray, facing: np.ndarray, camera, pose) -> np.ndarray:
    """(P,) bool: the map points (``xyz`` (P, 3), viewing directions ``facing`` (P, 3))
    visible from ``pose`` with ``camera`` (see the module docstring)."""
    import cv2

    from pramloc.geometry import project

    uv, z = project(camera, pose, xyz)
    to_cam = pose.center - xyz
    to_cam /= np.maximum(np.linalg.norm(to_cam, axis=1, keepdims=True), 1e-12)
    cand = np.flatnonzero((z > 0) & (uv[:, 0] >= -0.5) & (uv[:, 1] >= -0.5) & (uv[:, 0] < camera.width - 0.5)
                          & (uv[:, 1] < camera.height - 0.5)
                          & ((facing * to_cam).sum(1) >= np.cos(np.deg2rad(MAX_FACING_DEG))))
    # Occlusion by a depth buffer of the points themselves: each point covers a cell of
    # CELL px and its neighbours (3 x 3: the sparse points' surfaces are closed), and a
    # point is hidden behind a cell's nearest point more than DEPTH_TOLERANCE deeper.
    cells = np.floor((uv[cand] + 0.5) / CELL).astype(np.int64)
    gw, gh = -(-camera.width // CELL), -(-camera.height // CELL)
    zbuf = np.full(gh * gw, np.inf, np.float32)
    flat = cells[:, 1] * gw + cells[:, 0]
    np.minimum.at(zbuf, flat, z[cand].astype(np.float32))
    zbuf = cv2.erode(zbuf.reshape(gh, gw), np.ones((3, 3), np.uint8), borderType=cv2.BORDER_REPLICATE).ravel()
    vis = np.zeros(len(xyz), bool)
    vis[cand[z[cand] <= zbuf[flat] * (1 + DEPTH_TOLERANCE)]] = True
    return vis


def positives(m, queries) -> tuple[list[np.ndarray], list[int]]:
    """Per query (a :class:`Scene`'s images with pose and camera): the positive map images
    (indices) and the number of its visible points."""
    xyz = np.asarray(m.xyz, np.float64)
    facing = facing_directions(m)
    seen = np.stack([visible_points(xyz, facing, c, p) for c, p in zip(m.cameras, m.poses)])  # (M, P)
    pos, counts = [], []
    for im in queries.images:
        v = visible_points(xyz, facing, im.camera, im.pose)
        n = int(v.sum())
        shared = seen[:, v].sum(1)
        pos.append(np.flatnonzero(shared >= MIN_SHARE * n) if n else np.zeros(0, np.int64))
        counts.append(n)
    return pos, counts


def recall(ranked: list[np.ndarray], pos: list[np.ndarray]) -> dict:
    return {f"R@{k}": round(float(np.mean([len(np.intersect1d(r[:k], p)) > 0 for r, p in zip(ranked, pos)])), 4)
            for k in RECALL_AT}


def landmark_ranking(m, recognizer, feats: dict, keypoints: int) -> tuple[np.ndarray, float]:
    """Map images ranked by the cosine of the recognizer's landmark visibility (L,) with each
    image's landmark histogram (its observed points per landmark), and the ms it took."""
    t = time.perf_counter()
    n = min(len(feats["keypoints"]), keypoints)
    rec = recognizer.recognize(feats["keypoints"][:n], feats["descriptors"][:n], tuple(feats["image_size"]))
    scores = landmark_histograms(m) @ (rec.visibility / max(np.linalg.norm(rec.visibility), 1e-12))
    return np.argsort(-scores, kind="stable"), (time.perf_counter() - t) * 1e3


_HIST: dict = {}


def landmark_histograms(m) -> np.ndarray:
    """(M, L) unit rows: each map image's observed points per landmark."""
    if id(m) not in _HIST:
        obs_img = np.repeat(np.arange(len(m.image_names)), np.diff(m.image_offsets))
        lm = np.asarray(m.point_landmark, np.int64)[np.asarray(m.image_points, np.int64)]
        h = np.zeros((len(m.image_names), m.num_landmarks))
        np.add.at(h, (obs_img, lm), 1.0)
        _HIST[id(m)] = h / np.maximum(np.linalg.norm(h, axis=1, keepdims=True), 1e-12)
    return _HIST[id(m)]


def method_conf(spec: str, base):
    """``name[:backbone]`` -> a RetrievalConfig (the map's, with the method and backbone)."""
    from dataclasses import replace

    name, _, backbone = spec.partition(":")
    return replace(base, method=name, **({"backbone": backbone} if backbone else {}))


def run(scene: str, methods: list[str], maps: Path, localize: list[str] | None, overrides: list[str]) -> dict:
    from pramloc import retrieval
    from pramloc.config import LocalizationConfig, RetrievalConfig, parse_overrides
    from pramloc.features import extract_path
    from pramloc.mapio import load_map, retrieval_index
    from pramloc.recognition import Recognizer
    from pramloc.retrieval import RetrievalInput, map_inputs
    from pramloc.retrieval.backbones import dense_features

    map_dir = maps / MAP_DIRS.get(scene, Path("maps") / scene)
    m = load_map(map_dir)
    # As localize: the recognizer's strongest keypoints, as many as the map's preset labels.
    n_rec = LocalizationConfig.from_dict(m.manifest["config"].get("localization", {}),
                                         "localization").recognition_keypoints
    queries = load_queries(scene)
    base = RetrievalConfig.from_dict({**m.manifest["config"]["retrieval"], **parse_overrides(overrides)},
                                     "retrieval")
    image_dir = Path(m.manifest["source"]["root"])
    map_items = map_inputs(m, [RetrievalInput(image=image_dir / n, name=n) for n in m.image_names])
    report = {**stamp(), "scene": scene, "map": str(map_dir), "map_images": len(m.image_names),
              "queries": len(queries.images), "positives": {"min_share": MIN_SHARE,
                                                            "max_facing_deg": MAX_FACING_DEG}, "methods": {}}
    # Ground truth.
    pos, nvis = positives(m, queries)
    report["positives"].update(median_visible_points=int(np.median(nvis)),
                               median_positives=int(np.median([len(p) for p in pos])),
                               queries_without_positive=int(sum(len(p) == 0 for p in pos)))
    print(f"{scene}: {len(m.image_names)} map images, {len(queries.images)} queries, positives {report['positives']}")
    # The queries' local features (vlad, the recognizer) with the map's extractor.
    fconf = m.manifest["feature"]
    recognizer = Recognizer.load(m.recognizer_path) if m.recognizer_path is not None else None
    q_items = []
    for im in queries.images:
        f = extract_path(queries.path(im.name), fconf)
        item = RetrievalInput(f["descriptors"], f["keypoints"], queries.path(im.name), im.name,
                              memo={"features": f})
        if recognizer is not None:  # landmark-vlad's regions: the recognizer's labels, as localize gives them
            n = min(len(f["keypoints"]), n_rec)
            item.keypoints = f["keypoints"][:n]
            item.labels = recognizer.recognize(f["keypoints"][:n], f["descriptors"][:n], tuple(f["image_size"])).labels
        q_items.append(item)
    # The map's VLAD as stored, and the recognizer's landmark ranking.
    stored = retrieval_index(m)
    backbone_times: dict = {}
    for spec in methods:
        conf = method_conf(spec, base)
        if conf.method == "vlad":
            index, fit_s, backbone_ms = stored, m.manifest["timings"].get("retrieval"), 0.0
        else:
            # Dense features of the map images first (their time is per image, like the queries').
            for it in map_items:
                dense_features(it, conf)
            t = time.perf_counter()
            index = retrieval.fit(conf, map_items)
            fit_s = time.perf_counter() - t
            key = (conf.backbone, conf.max_side, conf.weights)
            if key not in backbone_times:  # measured once per backbone, the queries' features cold
                bt = []
                for it in q_items:
                    t = time.perf_counter()
                    dense_features(it, conf)
                    bt.append((time.perf_counter() - t) * 1e3)
                backbone_times[key] = float(np.median(bt))
            backbone_ms = backbone_times[key]
        ranked, at = [], []
        for it in q_items:
            t = time.perf_counter()
            idx, _ = index.search(index.describe(it), len(m.image_names))
            at.append((time.perf_counter() - t) * 1e3)
            ranked.append(idx)
        r = recall(ranked, pos)
        report["methods"][spec] = {**r, "ms_per_image": round(backbone_ms + float(np.median(at)), 1),
                                   "backbone_ms": round(backbone_ms, 1), "aggregation_ms": round(float(np.median(at)), 2),
                                   "bytes_per_image": int(index.nbytes // max(len(index), 1)),
                                   "fit_s": None if fit_s is None else round(fit_s, 2),
                                   "dim": int(np.asarray(index.vectors).shape[1]),
                                   "regions_per_image": round(len(index.vectors) / max(len(index), 1), 2),
                                   "config": {k: getattr(conf, k) for k in ("method", "backbone", "dense_words", "dim",
                                                                             "max_side")}}
        report["methods"][spec]["_index"] = index
        print(f"  {spec:16s} {r} {report['methods'][spec]['ms_per_image']} ms/image "
              f"{report['methods'][spec]['bytes_per_image']} B/image fit {report['methods'][spec]['fit_s']} s")
    if recognizer is not None:
        ranked, ms = zip(*(landmark_ranking(m, recognizer, it.memo["features"], n_rec)
                           for it in q_items))
        r = recall(list(ranked), pos)
        report["methods"]["landmarks (recognizer)"] = {
            **r, "ms_per_image": round(float(np.median(ms)), 1), "bytes_per_image": int(4 * m.num_landmarks),
            "fit_s": m.manifest["timings"].get("recognizer"), "dim": int(m.num_landmarks)}
        print(f"  {'landmarks':16s} {r} {report['methods']['landmarks (recognizer)']['ms_per_image']} ms/image")
    indexes = {k: v.pop("_index") for k, v in report["methods"].items() if "_index" in v}
    if localize is not None:
        best = max((k for k in indexes if k != "vlad"), key=lambda k: (report["methods"][k]["R@1"],
                                                                       report["methods"][k]["R@5"]))
        report["localize"] = localize_with(map_dir, queries, {k: indexes[k] for k in (localize or [best])})
    for it in map_items + q_items:
        it.memo.clear()
    return report


def localize_with(map_dir: Path, queries, indexes: dict) -> dict:
    """``--mode retrieval`` with the map's index (``vlad``) and with each of ``indexes``
    (name -> fitted index) swapped in, interleaved query by query."""
    from pramloc.evaluate import evaluate
    from pramloc.localize import Localizer

    locs = {"vlad": Localizer(map_dir, "retrieval")}
    for name, index in indexes.items():
        if name != "vlad":
            locs[name] = Localizer(map_dir, "retrieval")
            locs[name].index = index
            if "labels" in index.needs:  # landmark-vlad: the query's labels from the map's recognizer
                from pramloc.recognition import Recognizer

                locs[name]._labeler = Recognizer.load(locs[name].map.recognizer_path)
    results = localize_in_turn(locs, queries)
    poses = {k: {r.name: r.pose for r in rs if r.pose is not None} for k, rs in results.items()}
    times = {k: [sum(r.times_ms.values()) for r in rs] for k, rs in results.items()}
    gt = {im.name: im.pose for im in queries.images}
    out = {}
    for k in locs:
        ev = evaluate(poses[k], gt)
        out[k] = {"recall": {f"{t['translation']}m,{t['rotation_deg']}deg": t["recall"] for t in ev["recall"]},
                  "median_translation_cm": round(ev["median_translation"] * 100, 2),
                  "median_rotation_deg": round(ev["median_rotation_deg"], 3), "failed": len(ev["missing"]),
                  "median_ms": round(float(np.median(times[k])), 1)}
        print(f"  localize --mode retrieval with {k:14s} {out[k]}")
    return out


def table(report: dict) -> str:
    """The dvgl-style markdown table of one scene's report."""
    rows = ["| method | R@1 | R@5 | R@10 | ms / image | bytes / image | fit s |", "|---|---|---|---|---|---|---|"]
    for name, r in report["methods"].items():
        ms = f"{r['ms_per_image']}" + (f" ({r['backbone_ms']} + {r['aggregation_ms']})" if r.get("backbone_ms") else "")
        rows.append(f"| {name} | {100 * r['R@1']:.1f} | {100 * r['R@5']:.1f} | {100 * r['R@10']:.1f} | {ms} | "
                    f"{r['bytes_per_image']} | {r['fit_s']} |")
    return "\n".join(rows)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenes", nargs="+", default=list(ALL_SCENES), choices=list(ALL_SCENES))
    ap.add_argument("--methods", nargs="+", default=DEFAULT_METHODS, help="name[:backbone]")
    ap.add_argument("--maps", type=Path, default=OUT, help="the folder holding maps/<scene> (bench/out)")
    ap.add_argument("--localize", nargs="*", metavar="METHOD", default=None,
                    help="also localize (--mode retrieval) with vlad and these methods (none named: the best)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="retrieval.KEY=VALUE")
    ap.add_argument("--tag", default="")
    ap.add_argument("--table", action="store_true", help="print the tables of the results files, run nothing")
    a = ap.parse_args()
    if a.table:
        for s in a.scenes:
            path = RESULTS / f"retrieval_{s}{a.tag}.json"
            if path.exists():
                print(f"### {s}\n\n{table(json.loads(path.read_text()))}\n")
        raise SystemExit(0)
    RESULTS.mkdir(parents=True, exist_ok=True)
    for s in a.scenes:
        rep = run(s, a.methods, a.maps, a.localize, [o.removeprefix("retrieval.") for o in a.overrides])
        (RESULTS / f"retrieval_{s}{a.tag}.json").write_text(json.dumps(rep, indent=2))
