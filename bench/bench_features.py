"""Local features compared: each extractor builds each scene's map and localizes its
queries in every mode, in one run (the same machine load for all).

    python bench/bench_features.py [--extractors sift xfeat disk] [--scenes 7scenes-interleaved 7scenes-block strecha]
                                   [--modes recognition retrieval auto] [--train-minutes M] [--set SECTION.KEY=VALUE ...]
                                   [--night [--rebuilds 5]]

Per (scene, extractor): a cold build (``--set features.name=EXTRACTOR`` on the scene's
preset; timed stages, map size, peak memory) into bench/out/maps/<scene>_<extractor>,
then bench/bench_localize.py's measurement (accuracy at the four thresholds, time per
stage). Writes bench/results/features_<scene>_<extractor>.json; ``--night`` also runs
bench/bench_night.py per extractor (bench/results/night_<extractor>.json). Tables:
``python bench/report.py``. ``--train-minutes`` shortens recognizer training for quick
checks (the preset's budget is 9.5 min per map on a 2-core CPU); the JSON records it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_build  # noqa: E402
import bench_localize  # noqa: E402
from common import OUT, RESULTS, SCENES, stamp  # noqa: E402

EXTRACTORS = ("sift", "xfeat", "disk")


def run(scene: str, extractor: str, modes: list[str], train_minutes: float | None, device: str | None,
        extra: list[str], variant: str = "", reuse: bool = False) -> dict:
    """Build and localize ``scene`` with ``extractor`` (+ ``extra`` overrides); ``variant``
    names a non-default setting in the file names (``xfeat-1024kp``). ``reuse``: localize
    with the map (and build numbers) of the previous run instead of building again (SIFT
    without a variant: the preset's map of bench/bench_build.py if that map is gone)."""
    overrides = [f"features.name={extractor}", *extra]
    tag = f"_{extractor}{'-' + variant if variant else ''}"
    previous = RESULTS / f"features_{scene}{tag}.json"
    if reuse:
        old = json.loads(previous.read_text()) if previous.exists() else None
        if old is not None and Path(old["build"]["map"]).exists():
            build, train_minutes = old["build"], old["train_minutes"]
        elif extractor == "sift" and not variant and not extra:
            build = {**json.loads((RESULTS / f"build_{scene}.json").read_text()), "map": str(OUT / "maps" / scene)}
        else:
            raise SystemExit(f"--reuse-maps: no previous run of {scene} with {extractor} ({previous})")
        if not Path(build["map"]).exists():
            raise SystemExit(f"--reuse-maps: map {build['map']} not found")
        build = {**build, "reused": True}
    else:
        build = bench_build.run(scene, train_minutes, device, overrides, tag=tag, write=False)
    loc = bench_localize.run(scene, modes, device, Path(build["map"]), tag=tag, write=False)
    result = {**stamp(), "scene": scene, "extractor": extractor + (f" ({variant})" if variant else ""),
              "overrides": overrides, "train_minutes": train_minutes, "build": build, "localize": loc}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"features_{scene}{tag}.json").write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--extractors", nargs="+", default=list(EXTRACTORS), choices=EXTRACTORS)
    ap.add_argument("--scenes", nargs="*", default=list(SCENES), choices=list(SCENES), help="none: only --night")
    ap.add_argument("--modes", nargs="+", default=["recognition", "retrieval", "auto"])
    ap.add_argument("--train-minutes", type=float, default=None, help="Recognizer budget (default: the preset's).")
    ap.add_argument("--device", default=None)
    ap.add_argument("--set", dest="extra", nargs="*", default=[], metavar="SECTION.KEY=VALUE",
                    help="More build overrides (all extractors).")
    ap.add_argument("--variant", default="", help="Name of the --set variant in the result files (e.g. 1024kp).")
    ap.add_argument("--night", action="store_true", help="Also the Sacre-Coeur night query (bench_night.py).")
    ap.add_argument("--rebuilds", type=int, default=5)
    ap.add_argument("--reuse-maps", action="store_true",
                    help="Localize with the maps of the previous run (its build numbers kept) instead of building.")
    a = ap.parse_args()
    for s in a.scenes:
        for x in a.extractors:
            run(s, x, a.modes, a.train_minutes, a.device, a.extra, a.variant, a.reuse_maps)
    if a.night:
        import bench_night

        for x in a.extractors:
            rep = bench_night.run(a.rebuilds, 1.0 if a.train_minutes is None else a.train_minutes, 100,
                                  [f"features.name={x}", *a.extra])
            (RESULTS / f"night_{x}.json").write_text(json.dumps(rep, indent=2))
            print(f"night.jpg with {x}: {rep['correct']}/{rep['rebuilds']} correct, inliers "
                  f"{[r['inliers'] for r in rep['runs']]}")
