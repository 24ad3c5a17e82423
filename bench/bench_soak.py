"""Long run: localize N queries (the real queries repeated) with one Localizer and record
resident memory and throughput every ``--every`` queries.

    python bench/bench_soak.py [--scene 7scenes-interleaved] [--queries 1000] [--mode auto]

Writes bench/results/soak_<scene>.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import OUT, RESULTS, SCENES, stamp  # noqa: E402


def run(scene: str, n: int, mode: str, every: int) -> dict:
    from pramloc.datasets import load_dataset
    from pramloc.localize import Localizer

    kind, root, _, qsplit, _ = SCENES[scene]
    queries = load_dataset(kind, root, qsplit).images
    loc = Localizer(OUT / "maps" / scene, mode)
    proc = psutil.Process()
    samples, ok, t0, t_last = [], 0, time.perf_counter(), time.perf_counter()
    for i in range(n):
        im = queries[i % len(queries)]
        r = loc.localize(Path(root) / im.name, im.camera, im.name)
        ok += r.pose is not None
        if (i + 1) % every == 0:
            now = time.perf_counter()
            samples.append({"queries": i + 1, "rss_mb": round(proc.memory_info().rss / 2**20, 1),
                            "queries_per_s": round(every / (now - t_last), 2)})
            t_last = now
            print(samples[-1], flush=True)
    rss = np.array([s["rss_mb"] for s in samples])
    qps = np.array([s["queries_per_s"] for s in samples])
    report = {**stamp(), "scene": scene, "mode": mode, "queries": n, "localized": ok,
              "wall_s": round(time.perf_counter() - t0, 1), "samples": samples,
              "rss_first_mb": float(rss[0]), "rss_last_mb": float(rss[-1]), "rss_max_mb": float(rss.max()),
              "qps_first_half": round(float(qps[: len(qps) // 2].mean()), 2),
              "qps_second_half": round(float(qps[len(qps) // 2:].mean()), 2)}
    (RESULTS / f"soak_{scene}.json").write_text(json.dumps(report, indent=2))
    print({k: v for k, v in report.items() if k != "samples"})
    return report


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scene", default="7scenes-interleaved", choices=list(SCENES))
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--mode", default="auto", choices=["auto", "recognition", "retrieval"])
    ap.add_argument("--every", type=int, default=50)
    a = ap.parse_args()
    run(a.scene, a.queries, a.mode, a.every)
