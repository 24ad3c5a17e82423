"""One command reproduces every table of docs/BENCHMARKS.md:

    python bench/run_all.py [--scenes ...] [--train-minutes N] [--device cuda]

For each real scene with ground truth: build the map (timed stages, peak memory, size),
measure the recognizer, localize the queries in each mode (recognition, retrieval, auto)
in one run, evaluate, put each query's outcome in a cause (bench/bench_failures.py), run
the hloc-style exhaustive reference (bench/bench_exhaustive.py); then write the tables
(bench/report.py).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_build  # noqa: E402
import bench_exhaustive  # noqa: E402
import bench_failures  # noqa: E402
import bench_localize  # noqa: E402
import bench_recognition  # noqa: E402
import report  # noqa: E402
from common import SCENES  # noqa: E402

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenes", nargs="+", default=list(SCENES), choices=list(SCENES))
    ap.add_argument("--train-minutes", type=float, default=None)
    ap.add_argument("--device", default=None)
    ap.add_argument("--skip-build", action="store_true", help="Reuse the maps in bench/out/maps.")
    a = ap.parse_args()
    for s in a.scenes:
        if not a.skip_build:
            bench_build.run(s, a.train_minutes, a.device)
        bench_recognition.run(s)
        bench_localize.run(s, ["recognition", "retrieval", "auto"], a.device)
        bench_failures.run(s)
        bench_exhaustive.run(s)
    report.main()
