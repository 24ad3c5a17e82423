"""Map-building benchmark: wall time per stage, peak memory, points/landmarks, map size,
and the size of the equivalent hloc-style map (features of all map images as hloc
stores them, fp16, + the full triangulated model).

    python bench/bench_build.py [--scenes 7scenes-interleaved strecha] [--train-minutes 8]

Writes bench/results/build_<scene>.json and the map under bench/out/maps/<scene>.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import OUT, RESULTS, SCENES, stamp  # noqa: E402


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def hloc_style_size(cache: Path) -> dict:
    """Bytes of an hloc map of the same scene: every keypoint of every map image with
    fp16 keypoints (2), descriptor (128) and score (hloc's as_half), + the full model."""
    import h5py

    from pramloc.io import list_feature_names

    feats = next(cache.glob("features-*.h5"))
    with h5py.File(feats, "r") as f:
        n = sum(f[name]["keypoints"].shape[0] for name in list_feature_names(feats))
    model = next(p for p in cache.glob("sfm-*") if p.is_dir())
    return {"keypoints": n, "features_bytes": n * 2 * (2 + 128 + 1), "model_bytes": dir_size(model),
            "bytes": n * 2 * (2 + 128 + 1) + dir_size(model)}


def run(scene: str, train_minutes: float | None, device: str | None, overrides: list[str] | None = None,
        tag: str = "", write: bool = True) -> dict:
    """Build ``scene``'s map cold (``overrides``: ``section.key=value`` on its preset) into
    bench/out/maps/<scene><tag>; write bench/results/build_<scene>.json when ``write``."""
    from pramloc import build, mapio
    from pramloc.build import cache_dir
    from pramloc.config import load_config
    from pramloc.datasets import load_dataset

    kind, root, db, _, preset = SCENES[scene]
    conf = load_config(preset, list(overrides or []))
    train = train_minutes != 0
    if train_minutes:
        conf.recognizer.train_minutes = train_minutes
    out = OUT / "maps" / f"{scene}{tag}"
    # Cold build: no cached features or model.
    import shutil

    shutil.rmtree(cache_dir(out), ignore_errors=True)
    t = time.perf_counter()
    from pramloc.parallel import num_cores

    # As `pramloc build-map` runs it: feature extraction and pair matching on one process per core.
    manifest = build.main(conf, load_dataset(kind, root, db), out, overwrite=True, train=train, device=device,
                          workers=num_cores())
    wall = time.perf_counter() - t
    parts = mapio.part_sizes(out)
    h5 = mapio.h5_part_sizes(out)
    hloc = hloc_style_size(cache_dir(out))
    result = {
        **stamp(), "scene": scene, "wall_s": round(wall, 1), "timings": manifest["timings"],
        "peak_memory_mb": manifest["peak_memory_mb"], "counts": manifest["counts"], "stats": manifest["stats"],
        "map_bytes": parts, "map_h5_bytes": h5, "map_total_bytes": sum(parts.values()),
        "localization_bytes": parts["map.h5"], "hloc_style": hloc,
        "localization_share_of_hloc": round(parts["map.h5"] / hloc["bytes"], 4),
        "total_share_of_hloc": round(sum(parts.values()) / hloc["bytes"], 4),
        "recognizer": manifest.get("recognizer"), "feature": manifest["feature"], "descriptor": manifest["descriptor"],
        "overrides": list(overrides or []), "map": str(out),
    }
    if write:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / f"build_{scene}.json").write_text(json.dumps(result, indent=2))
    print(json.dumps({k: result[k] for k in ("scene", "wall_s", "timings", "peak_memory_mb", "counts",
                                             "map_total_bytes", "localization_share_of_hloc")}, indent=1))
    return result


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenes", nargs="+", default=["7scenes-interleaved", "strecha"], choices=list(SCENES))
    ap.add_argument("--train-minutes", type=float, default=None, help="0: no recognizer; default: preset")
    ap.add_argument("--device", default=None)
    a = ap.parse_args()
    for s in a.scenes:
        run(s, a.train_minutes, a.device)
