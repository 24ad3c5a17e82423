"""Queries per second of ``pramloc localize --workers 1`` vs ``--workers N`` (and ``--ray``),
and whether their results files are byte-identical.

Each configuration is one ``pramloc localize`` command on the 7-Scenes interleaved split
(167 queries, real map), timed end to end (process start, map loading, worker start-up
included), ``--repeat`` times (the fastest run is reported; a busy machine disturbs single
runs). The load average is recorded before and after: on a shared machine the ratio
measured is only indicative.

    python bench/bench_workers.py                  # workers 1 and 2, ray with 2 actors
    python bench/bench_workers.py --workers 1,2,4 --no-ray --repeat 3
    python bench/bench_workers.py --busy 2         # next to 2 busy processes (a shared machine)

``--omp-active`` adds a ``--workers 1`` run with ``OMP_WAIT_POLICY=ACTIVE`` (OpenMP threads
spin while they wait, the library default that pramloc overrides with PASSIVE) to show
what the setting is worth; ``--busy N`` runs everything next to N processes that keep a
core busy each (started here, stopped at the end).
Writes bench/results/workers.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import KITCHEN, OUT, RESULTS, ROOT, stamp  # noqa: E402

MAP = Path(os.environ.get("PRAMLOC_WORKERS_MAP", OUT / "maps" / "7scenes-interleaved"))
QUERIES = KITCHEN / "splits" / "interleaved_query.txt"


def run(workers: int, ray: bool, out: Path, mode: str, omp: str | None = None) -> float:
    """Wall seconds of one ``pramloc localize`` command writing ``out`` (``omp``: the
    OMP_WAIT_POLICY it runs with, None: pramloc's default)."""
    cmd = [sys.executable, "-m", "pramloc.cli", "-q", "localize", str(MAP), "--dataset", "7scenes",
           "--root", str(KITCHEN), "--queries", str(QUERIES), "--out", str(out), "--mode", mode,
           "--workers", str(workers)] + (["--ray"] if ray else [])
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled")}
    env.pop("OMP_WAIT_POLICY", None)
    if omp:
        env["OMP_WAIT_POLICY"] = omp
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", default="1,2", help="worker counts, comma-separated (the first is the baseline)")
    ap.add_argument("--no-ray", action="store_true", help="skip the --ray run")
    ap.add_argument("--repeat", type=int, default=2, help="runs per configuration (the fastest is kept)")
    ap.add_argument("--mode", default="auto", choices=["auto", "recognition", "retrieval"])
    ap.add_argument("--omp-active", action="store_true", help="add --workers 1 with OMP_WAIT_POLICY=ACTIVE")
    ap.add_argument("--busy", type=int, default=0, help="busy processes running beside the benchmark")
    ap.add_argument("--work", type=Path, default=Path("/tmp/pramloc-workers"))
    ap.add_argument("--out", type=Path, default=RESULTS / "workers.json")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    n_queries = sum(1 for line in open(QUERIES) if line.strip())
    configs = [(int(w), False, None) for w in args.workers.split(",")]
    if args.omp_active:
        configs.append((1, False, "ACTIVE"))
    if not args.no_ray:
        configs.append((max(w for w, _, _ in configs), True, None))
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)]
    load_before = os.getloadavg()
    runs = []
    try:
        for workers, ray, omp in configs:
            label = (f"ray{workers}" if ray else f"workers{workers}") + (f"-omp-{omp.lower()}" if omp else "")
            out = args.work / f"{label}.txt"
            walls = [run(workers, ray, out, args.mode, omp) for _ in range(args.repeat)]
            runs.append({"label": label, "workers": workers, "ray": ray, "omp_wait_policy": omp or "PASSIVE",
                         "wall_s": [round(w, 2) for w in walls], "queries_per_s": round(n_queries / min(walls), 2),
                         "results": str(out)})
    finally:
        for b in busy:
            b.kill()
    base = runs[0]
    ref = Path(base["results"]).read_bytes()
    for r in runs:
        r["speedup"] = round(r["queries_per_s"] / base["queries_per_s"], 2)
        r["identical_to_first"] = Path(r["results"]).read_bytes() == ref
        print(f"{r['label']:>18}: {r['queries_per_s']:6.2f} queries/s (best of {r['wall_s']} s), "
              f"x{r['speedup']:.2f}, results {'identical' if r['identical_to_first'] else 'DIFFERENT'}")
    report = {**stamp(), "map": str(MAP), "queries": n_queries, "mode": args.mode, "cores": os.cpu_count(),
              "busy_processes": args.busy,
              "load_before": load_before, "load_after": os.getloadavg(), "runs": runs}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(f"load average before {load_before}, after {report['load_after']}; wrote {args.out}")


if __name__ == "__main__":
    main()
