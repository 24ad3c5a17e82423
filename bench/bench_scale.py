"""How each stage's cost grows with the map: synthetic maps of 1k, 10k, 100k images.

A synthetic map of N images is made of ceil(N / 167) copies of the real 7-Scenes map
(interleaved split, 167 images), so it keeps the real statistics per image (points,
observations, landmarks per image, descriptor distribution):

- copy 0 is the real map itself, unchanged (names, poses, points, descriptors), so real
  query images still register against the synthetic map;
- copy c > 0 is placed 20 m further on a grid (its poses moved with it), its descriptors
  are the real ones plus uniform noise of +-8 (of 255; then renormalized on load), its
  VLAD vectors the real ones plus noise, its 32 landmarks new ones (landmarks scale with
  the map: 32 per 167 images);
- the recognizer keeps the real one's weights and gets one classifier row and one
  visibility row per new landmark (the real rows plus noise, biased down so that the
  real landmarks still win): its classifier grows with the landmarks as a trained one's
  would, which is what costs time.

Maps are written with pramloc's own writer (:func:`pramloc.mapio.write_map_data`) into
``--work`` (default /tmp/pramloc-scale; never the repository; the 100k map is about 2.5 GB).
Each map is then measured in a fresh process: load time (``Localizer(map)``: checksums,
map, recognizer, retrieval index; the page cache is warm, the map having just been
written), resident and private memory, and per-query stage times of real 7-Scenes queries
in each mode (``recognition``, ``retrieval``, ``auto``: the same localizer, the same
queries). Cost only: accuracy is measured on real scenes (bench_localize.py).

    python bench/bench_scale.py                      # 167 (real), 1k, 10k, 100k
    python bench/bench_scale.py --sizes 1000 --queries 10
Writes bench/results/scale.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import KITCHEN, OUT, RESULTS, stamp  # noqa: E402

# The real map (bench_build.py builds it into bench/out/maps); PRAMLOC_SCALE_MAP names another.
REAL_MAP = Path(os.environ.get("PRAMLOC_SCALE_MAP", OUT / "maps" / "7scenes-interleaved"))
QUERIES = KITCHEN / "splits" / "interleaved_query.txt"
SPACING = 20.0  # metres between copies


def synthesize(real: Path, n_images: int, out: Path, seed: int = 0) -> Path:
    """A map folder of >= ``n_images`` images from copies of the ``real`` map (module docstring)."""
    import torch

    from pramloc import mapio
    from pramloc.geometry import Pose
    from pramloc.mapio.schema import QuantizedDescriptors

    m = mapio.load_map(real, lazy=True)
    k = math.ceil(n_images / len(m.image_names))
    rng = np.random.default_rng(seed)
    P, M, L, O = len(m.xyz), len(m.image_names), m.num_landmarks, len(m.image_points)
    side = math.ceil(math.sqrt(k))
    offsets = np.array([[(c % side) * SPACING, (c // side) * SPACING, 0.0] for c in range(k)], np.float32)
    desc0 = np.asarray(m.descriptors.stored)
    desc = np.empty((k * P, desc0.shape[1]), np.uint8)
    for c in range(k):
        d = desc0 if c == 0 else np.clip(desc0.astype(np.int16) + rng.integers(-8, 9, desc0.shape, dtype=np.int16), 0, 255)
        desc[c * P:(c + 1) * P] = d
    xyz = (np.asarray(m.xyz)[None] + offsets[:, None]).reshape(-1, 3)
    poses = []
    for c in range(k):
        for p in m.poses:  # X' = X + o  =>  t' = t - R o
            poses.append(Pose(p.qvec, p.tvec - p.R @ offsets[c].astype(np.float64)) if c else p)
    vec0, scales0 = np.asarray(m.retrieval["vectors"]), np.asarray(m.retrieval["scales"])
    vectors = np.concatenate([vec0] + [np.clip(vec0.astype(np.int16) + rng.integers(-6, 7, vec0.shape, dtype=np.int16),
                                               -127, 127).astype(np.int8) for _ in range(k - 1)])
    syn = mapio.LandmarkMap(
        xyz=xyz,
        descriptors=QuantizedDescriptors(desc),
        point_landmark=(np.asarray(m.point_landmark, np.int64)[None] + L * np.arange(k)[:, None]).reshape(-1),
        color=np.tile(np.asarray(m.color), (k, 1)),
        image_names=[n if c == 0 else f"copy{c:05d}/{n}" for c in range(k) for n in m.image_names],
        cameras=list(m.cameras) * k,
        poses=poses,
        image_offsets=np.concatenate([[0], (np.asarray(m.image_offsets[1:])[None] + O * np.arange(k)[:, None]).reshape(-1)]),
        image_points=(np.asarray(m.image_points, np.int64)[None] + P * np.arange(k)[:, None]).reshape(-1),
        image_keypoints=np.tile(np.asarray(m.image_keypoints), (k, 1)),
        landmark_centers=(m.landmark_centers[None] + offsets[:, None].astype(np.float64)).reshape(-1, 3),
        retrieval={"vocabulary": np.asarray(m.retrieval["vocabulary"]), "vectors": vectors,
                   "scales": np.tile(scales0, k)},
    )
    del desc, vectors
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    staging = mapio.staging_dir(out)
    mapio.write_map_data(syn, staging)
    ckpt = torch.load(m.recognizer_path, map_location="cpu", weights_only=True)
    gen = torch.Generator().manual_seed(seed)

    def grow(t: torch.Tensor, first: int, bias: bool) -> torch.Tensor:
        """Rows of ``t`` after the first ``first`` (background) repeated for every copy, noisy."""
        t = t.float()
        head, rows = t[:first], t[first:]
        new = rows.repeat((k - 1,) + (1,) * (t.dim() - 1))
        new = new + 0.05 * rows.std() * torch.randn(new.shape, generator=gen)
        if bias:
            new = new - 3.0
        return torch.cat([head, rows, new]).half()

    sd = ckpt["state_dict"]
    for name, first in (("classifier", 1), ("visibility.2", 0)):
        sd[f"{name}.weight"] = grow(sd[f"{name}.weight"], first, False)
        sd[f"{name}.bias"] = grow(sd[f"{name}.bias"], first, True)
    ckpt["config"]["num_landmarks"] = L * k
    torch.save(ckpt, staging / mapio.RECOGNIZER)
    extra = {key: m.manifest[key] for key in ("config", "source", "feature", "retrieval") if key in m.manifest}
    extra["synthetic"] = {"from": str(real), "copies": k, "spacing_m": SPACING}
    mapio.write_manifest(staging, syn, extra)
    mapio.commit(staging, out, overwrite=True)
    return out


def _memory() -> dict:
    """Resident and private memory of this process, MB (/proc/self/smaps_rollup): file pages
    of the memory-mapped map are shareable between the workers of one machine (``Rss`` minus
    ``Private_Dirty``); ``Private_Dirty`` is each worker's own."""
    out = {}
    for line in open("/proc/self/smaps_rollup"):
        parts = line.split()
        if parts[0].rstrip(":") in ("Rss", "Pss", "Private_Clean", "Private_Dirty", "Shared_Clean", "Anonymous"):
            out[parts[0].rstrip(":").lower() + "_mb"] = round(int(parts[1]) / 1024, 1)
    return out


def measure(map_path: Path, num_queries: int, workers: int) -> dict:
    """In this (fresh) process, configured as one of ``workers`` workers (its threads): load
    time, memory, per-query stage times (medians, ms)."""
    from pramloc.datasets import load_dataset
    from pramloc.localize import Localizer
    from pramloc.parallel import set_threads, threads_per_worker

    set_threads(threads_per_worker(workers))  # as one of `localize --workers N`'s workers

    scene = load_dataset("7scenes", KITCHEN, QUERIES)
    queries = [(im.name, scene.path(im.name), im.camera) for im in scene.images][:num_queries]
    out = {"memory_start": _memory()}
    t0 = time.perf_counter()
    loc = Localizer(map_path, "auto")
    out["load_s"] = round(time.perf_counter() - t0, 3)
    out["memory_loaded"] = _memory()
    out["map"] = {k: v for k, v in loc.map.manifest["counts"].items()}
    out["map_bytes"] = sum(f["bytes"] for f in loc.map.manifest["files"].values())
    for mode in ("recognition", "retrieval", "auto"):
        loc.mode = mode
        results = [loc.localize(p, c, n) for n, p, c in queries]
        stages = sorted({k for r in results for k in r.times_ms})
        med = {k: round(float(np.median([r.times_ms.get(k, 0.0) for r in results])), 2) for k in stages}
        after = [sum(v for k, v in r.times_ms.items() if k != "features") for r in results]
        out[mode] = {"median_ms": med, "after_features_ms": round(float(np.median(after)), 2),
                     "total_ms": round(float(np.median([sum(r.times_ms.values()) for r in results])), 2),
                     "localized": sum(r.pose is not None for r in results), "queries": len(results),
                     "paths": {p: sum(r.path == p for r in results) for p in ("recognition", "retrieval", "failed")}}
    out["memory_after_queries"] = _memory()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1000,10000,100000", help="map images, comma-separated")
    ap.add_argument("--queries", type=int, default=20, help="real 7-Scenes queries per map and mode")
    ap.add_argument("--work", type=Path, default=Path("/tmp/pramloc-scale"), help="where the synthetic maps go")
    ap.add_argument("--keep", action="store_true", help="keep the synthetic maps")
    ap.add_argument("--workers", type=int, default=2,
                    help="measure one worker of `localize --workers N` (its threads: cores // N)")
    ap.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # internal: one map, in a fresh process
    ap.add_argument("--out", type=Path, default=RESULTS / "scale.json")
    args = ap.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.queries, args.workers)))
        return
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    runs = []
    for size in [0] + [int(s) for s in args.sizes.split(",")]:
        if size == 0:
            path, synth_s = REAL_MAP, 0.0
        else:
            t0 = time.perf_counter()
            path = synthesize(REAL_MAP, size, args.work / f"scale-{size}")
            synth_s = time.perf_counter() - t0
        r = json.loads(subprocess.check_output([sys.executable, __file__, "--measure", str(path),
                                                "--queries", str(args.queries), "--workers", str(args.workers)], env=env, text=True).splitlines()[-1])
        r.update(requested_images=size or r["map"]["images"], synthesize_s=round(synth_s, 1), path=str(path))
        runs.append(r)
        print(f"{r['map']['images']:>7} images {r['map']['points']:>9} points {r['map']['landmarks']:>6} landmarks "
              f"{r['map_bytes'] / 1e9:6.2f} GB: load {r['load_s']:6.2f} s, private {r['memory_after_queries']['private_dirty_mb']:7.1f} MB, "
              f"rss {r['memory_after_queries']['rss_mb']:7.1f} MB; after features: recognition "
              f"{r['recognition']['after_features_ms']:7.1f} ms {r['recognition']['median_ms']}, retrieval "
              f"{r['retrieval']['after_features_ms']:7.1f} ms {r['retrieval']['median_ms']}, auto {r['auto']['after_features_ms']:7.1f} ms",
              flush=True)
        if size and not args.keep:
            shutil.rmtree(path, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({**stamp(), "load": os.getloadavg(), "workers": args.workers, "real_map": str(REAL_MAP), "runs": runs}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
