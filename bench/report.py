"""Render bench/results/*.json into the tables of docs/BENCHMARKS.md (between markers)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, ROOT  # noqa: E402

DOC = ROOT / "docs" / "BENCHMARKS.md"
BEGIN, END = "<!-- generated tables: begin -->", "<!-- generated tables: end -->"
HEAD_BEGIN, HEAD_END = "<!-- headline: begin -->", "<!-- headline: end -->"
# Peers' numbers quoted from the issues (hloc with SIFT + mutual nearest neighbours, this kind of 2-core CPU).
HLOC = {
    "7scenes-interleaved": [("hloc, exhaustive query-map pairs (issue)", "100%", "", "", "", "~1 cm", "4.2 s", "23.5", "84"),
                            ("hloc, top-10 map images, ideal retrieval (issue)", "98.8%", "", "", "", "", "0.43 s", "23.5", "84")],
    "strecha": [("hloc, exhaustive (issue)", "100%", "", "", "", "0.8 cm / 0.03°", "1.7 s", "6", "")],
}


def _load(prefix):
    return {p.stem[len(prefix) + 1:]: json.loads(p.read_text()) for p in sorted(RESULTS.glob(f"{prefix}_*.json"))}


def mb(b):
    return f"{b / 1e6:.2f}"


def head(title: str | None, columns: str) -> list[str]:
    """Markdown lines that open a table: optional ``### title``, the header row of
    ``columns`` ("a | b | c") and its separator."""
    n = columns.count("|") + 1
    return ([f"### {title}", ""] if title else []) + [f"| {columns} |", "|" + "---|" * n]


def build_table(builds):
    lines = head("Map building", "scene | images | 3D points (triangulated) | kept points | landmarks | features s | triangulation s | landmarks s | retrieval s | recognizer s | total s | peak RAM MB | map.h5 MB | recognizer MB | total MB | hloc-style MB | localization part / hloc | whole map / hloc")
    for s, r in builds.items():
        t = r["timings"]
        lines.append(
            f"| {s} | {r['counts']['images']} | {r['stats']['model']['points3D']} | {r['counts']['points']} | "
            f"{r['counts']['landmarks']} | {t.get('features', 0):.1f} | {t.get('triangulation', t.get('sfm', 0)):.1f} | "
            f"{t.get('landmarks', 0):.1f} | {t.get('retrieval', 0):.1f} | {t.get('recognizer', 0):.1f} | {r['wall_s']:.1f} | "
            f"{r['peak_memory_mb']:.0f} | {mb(r['map_bytes'].get('map.h5', 0))} | "
            f"{mb(r['map_bytes'].get('recognizer.pt', 0))} | {mb(r['map_total_bytes'])} | {mb(r['hloc_style']['bytes'])} | "
            f"{100 * r['localization_share_of_hloc']:.1f}% | {100 * r['total_share_of_hloc']:.1f}% |")
    lines += ["", "map.h5 by part (MB): " + "; ".join(
        f"{s}: " + ", ".join(f"{k} {mb(v)}" for k, v in r["map_h5_bytes"].items()) for s, r in builds.items())]
    return lines


def recognition_table(recs):
    lines = head("Recognition (queries never seen in training; their strongest 1024 keypoints, as the localizer)", "scene | landmarks | queries | method | keypoint acc. | top-1 precision | dominant r@1 | r@3 | r@5")
    for s, r in recs.items():
        for name, m in r["methods"].items():
            ka = f"{100 * m['keypoint_accuracy']:.1f}%" if "keypoint_accuracy" in m else "-"
            lines.append(f"| {s} | {r['landmarks']} | {r['queries_evaluated']} | {name} | {ka} | "
                         f"{100 * m['top1']:.1f}% | {100 * m['r@1']:.1f}% | {100 * m['r@3']:.1f}% | {100 * m['r@5']:.1f}% |")
    lines += [""] + head(None, "scene | parameters | checkpoint MB | training s | threads | epochs | inference ms @500 / 1024 / 2048 kp")
    for s, r in recs.items():
        rc = r.get("recognizer", {})
        inf = r["inference_ms"]
        lines.append(f"| {s} | {rc.get('num_parameters', '?')} | {r['checkpoint_bytes'] / 1e6:.2f} | "
                     f"{rc.get('seconds', '?')} | {rc.get('num_threads', '?')} | {rc.get('epochs', '?')} | "
                     f"{inf.get('500', inf.get(500))} / {inf.get('1024', inf.get(1024))} / {inf.get('2048', inf.get(2048))} |")
    return lines


def localize_table(locs, builds):
    lines = head("Localization", "scene | mode | 5cm,5° | 25cm,2° | 50cm,5° | 5m,10° | median cm | median ° | failed | paths (recog./retr.) | features ms | recognition ms | retrieval ms | matching ms | PnP ms | refinement ms | total ms (median / p90) | w/o features ms | map MB | build s | build peak MB")
    for s, r in locs.items():
        for mode, m in r["modes"].items():
            rc = list(m["recall"].values())
            t = m["time"]
            lines.append(
                f"| {s} | {mode} | " + " | ".join(f"{100 * v:.1f}%" for v in rc) +
                f" | {m['median_translation_cm']:.2f} | {m['median_rotation_deg']:.2f} | {m['failed']}/{r['queries']} | "
                f"{m['paths']['recognition']}/{m['paths']['retrieval']} | " +
                " | ".join(f"{t[k]['median_ms']:.0f}" for k in ("features", "recognition", "retrieval", "matching", "pnp", "refinement")) +
                f" | {t['total']['median_ms']:.0f} / {t['total']['p90_ms']:.0f} | {t['total_without_features']['median_ms']:.0f} | "
                + (f"{mb(builds[s]['map_total_bytes'])} | {builds[s]['wall_s']:.0f} | {builds[s]['peak_memory_mb']:.0f} |"
                   if s in builds else "- | - | - |"))
        rr = r.get("retrieval_recall")
        if rr:
            lines.append(f"| {s} | VLAD retrieval recall@1/5/10 (positive: centre within {rr['max_distance']} m, "
                         f"view within {rr['max_angle']}°) | {100 * rr['recall@1']:.1f}% | {100 * rr['recall@5']:.1f}% | "
                         f"{100 * rr['recall@10']:.1f}% |" + " |" * 16)
    ratio = [(s, r["modes"]["auto"]["time"]) for s, r in locs.items() if "auto" in r["modes"]]
    if ratio:
        lines += ["", "`auto`: median time per query / median feature extraction (same run): " + "; ".join(
            f"{s}: {t['total']['median_ms']:.0f} / {t['features']['median_ms']:.0f} ms = "
            f"{t['total']['median_ms'] / max(t['features']['median_ms'], 1e-9):.2f}x" for s, t in ratio)]
    sp = [(s, r["speedup_recognition_vs_retrieval"]) for s, r in locs.items() if "speedup_recognition_vs_retrieval" in r]
    if sp:
        lines += ["", "Speed-up of `recognition` over `retrieval` (median per query, same queries, same run): " +
                  "; ".join(f"{s}: {v['end_to_end']}x end to end, {v['without_features']}x without feature extraction"
                            for s, v in sp)]
    return lines


def exhaustive_table(exh, locs):
    """hloc-style exhaustive localization (bench/bench_exhaustive.py) beside ``auto``, same run."""
    lines = head("Reference in the same run: hloc-style exhaustive matching, same features and model (bench/bench_exhaustive.py)",
                 "scene | method | 5cm,5° | 25cm,2° | 50cm,5° | 5m,10° | median cm | median ° | failed | ms per query w/o features")
    for s, r in exh.items():
        lines.append(f"| {s} | exhaustive, {r['map_images']} map images, ratio {r['ratio']}, RANSAC {r['ransac_max_error']} px | "
                     + " | ".join(f"{100 * v:.1f}%" for v in r["recall"].values())
                     + f" | {r['median_translation_cm']:.2f} | {r['median_rotation_deg']:.2f} | {r['failed']}/{r['queries']} | "
                     f"{r['median_time_without_features_ms']:.0f} |")
        a = locs.get(s, {}).get("modes", {}).get("auto")
        if a:
            lines.append(f"| {s} | pramloc `auto` | " + " | ".join(f"{100 * v:.1f}%" for v in a["recall"].values())
                         + f" | {a['median_translation_cm']:.2f} | {a['median_rotation_deg']:.2f} | {a['failed']}/{r['queries']} | "
                         f"{a['time']['total_without_features']['median_ms']:.0f} |")
    return lines


def failures_table(fails):
    """Causes of every query's outcome (bench/bench_failures.py), one row per run and mode."""
    from bench_failures import CAUSES

    lines = head("Where the errors come from (bench/bench_failures.py)", "scene | run | mode | queries | " + " | ".join(CAUSES))
    for key, r in fails.items():
        for mode, counts in r["modes"].items():
            lines.append(f"| {r['scene']} | {r.get('tag') or 'this run'} ({r['commit']}) | {mode} | {counts['queries']} | "
                         + " | ".join(str(counts.get(c, 0)) if c != "ground truth off" or r.get("map_held") else "-"
                                      for c in CAUSES) + " |")
    return lines


def soak_table(soaks):
    lines = head("Long run (1000 queries, one Localizer)", "scene | mode | queries | localized | wall s | RSS first / last / max MB | queries/s first half / second half")
    for s, r in soaks.items():
        lines.append(f"| {s} | {r['mode']} | {r['queries']} | {r['localized']} | {r['wall_s']} | "
                     f"{r['rss_first_mb']:.0f} / {r['rss_last_mb']:.0f} / {r['rss_max_mb']:.0f} | "
                     f"{r['qps_first_half']} / {r['qps_second_half']} |")
    lines += ["", "RSS every 50 queries: " + "; ".join(
        f"{s}: " + " ".join(f"{x['rss_mb']:.0f}" for x in r["samples"]) for s, r in soaks.items())]
    return lines


THRESHOLDS = "5cm,5° | 25cm,2° | 50cm,5° | 5m,10°"


def _recall_cells(m: dict) -> str:
    return " | ".join(f"{100 * v:.1f}%" for v in m["recall"].values())


def features_table(feats):
    """Each extractor's map and localization (bench/bench_features.py), same run per scene."""
    lines = head("Local features (bench/bench_features.py: every extractor on every scene, one run)",
                 f"scene | features | mode | {THRESHOLDS} | median cm | failed | features ms | recognition ms | "
                 "matching ms | PnP+refinement ms | total ms (median / p90) | map MB (map.h5 + recognizer) | bytes per "
                 "point descriptor | points | build s (features / triangulation / recognizer, budget min) | run")
    for key, r in feats.items():
        b, loc = r["build"], r["localize"]
        t_b = b["timings"]
        desc = b.get("descriptor", {})
        for mode, m in loc["modes"].items():
            t = m["time"]
            lines.append(
                f"| {r['scene']} | {r['extractor']} | {mode} | {_recall_cells(m)} | {m['median_translation_cm']:.2f} | "
                f"{m['failed']}/{loc['queries']} | {t['features']['median_ms']:.0f} | {t['recognition']['median_ms']:.0f} | "
                f"{t['matching']['median_ms']:.0f} | {t['pnp']['median_ms'] + t['refinement']['median_ms']:.0f} | "
                f"{t['total']['median_ms']:.0f} / {t['total']['p90_ms']:.0f} | {mb(b['map_total_bytes'])} | "
                f"{desc.get('dim', 128) * (2 if desc.get('storage') == 'float16' else 1)} | {b['counts']['points']} | "
                f"{b['wall_s']:.0f} ({t_b.get('features', 0):.0f} / {t_b.get('triangulation', t_b.get('sfm', 0)):.0f} / "
                f"{t_b.get('recognizer', 0):.0f}, {r.get('train_minutes') or 'preset'}) | {r['date']}, {r['commit']}"
                f"{' (map of an earlier run, --reuse-maps)' if b.get('reused') else ''} |")
    return lines


def degraded_table(degs):
    """7-Scenes interleaved queries degraded (bench/bench_degraded.py), every extractor in one run."""
    lines = head("Degraded queries (bench/bench_degraded.py: 7-Scenes interleaved, dark gamma 2.5 / Gaussian noise "
                 "sigma 8 / 7 px motion blur, and combined: all three, in the camera's order, seed 0)",
                 f"degradation | features | mode | {THRESHOLDS} | median cm | failed | features ms | total ms (median)")
    kinds = sorted({k for r in degs.values() for k in r["degradations"]})
    for kind in kinds:
        for x, r in degs.items():
            for mode, m in r["degradations"].get(kind, {}).items():
                lines.append(f"| {kind} | {x} | {mode} | {_recall_cells(m)} | {m['median_translation_cm']:.2f} | "
                             f"{m['failed']} | {m['time']['features']['median_ms']:.0f} | "
                             f"{m['time']['total']['median_ms']:.0f} |")
    return lines


def seeds_table(seeds):
    """Each mode with several RANSAC seeds in one run (bench/bench_seeds.py)."""
    lines = head("RANSAC seed spread (bench/bench_seeds.py: the same map and queries, one run per scene; "
                 "mean [min, max] over the seeds)",
                 f"scene | mode | against | seeds | {THRESHOLDS} | failed | date, commit")
    for r in seeds.values():
        for mode, entry in r["modes"].items():
            for ref, e in entry.items():
                sp = e["spread"]
                cells = " | ".join(f"{100 * v['mean']:.1f} [{100 * v['min']:.1f}, {100 * v['max']:.1f}]"
                                   for v in sp["recall"].values())
                lines.append(f"| {r['scene']}{' (' + r['tag'] + ')' if r.get('tag') else ''} "
                             f"| {mode} | {ref.replace('_', ' ')} | {len(r['seeds'])} | {cells} | "
                             f"{sp['failed']['mean']:.1f} | {r['date']}, {r['commit']} |")
    return lines


def night_table(nights):
    """The Sacre-Coeur night query per extractor (bench/bench_features.py --night)."""
    lines = head("Night query per extractor (bench/bench_night.py via bench_features.py --night)",
                 "features | correct / rebuilds | inliers per rebuild | registered images per rebuild")
    for x, r in nights.items():
        lines.append(f"| {x} | {r['correct']}/{r['rebuilds']} | {' '.join(str(v['inliers']) for v in r['runs'])} | "
                     f"{' '.join(str(v['registered_images']) for v in r['runs'])} |")
    return lines


def photos_table(photos):
    """A real photo collection (bench/bench_photos.py): COLMAP's pipeline, pramloc from the images
    alone (112 and 64 photos) and from the reference poses, one run."""
    lines = []
    for scene, r in photos.items():
        st, h = r["steps"], r["hloc"]
        lines += head(f"Photo collection: {scene} (bench/bench_photos.py, {r['date']}, {r['commit']})",
                      "build | photos registered | pairs matched | features s | pairs s | SfM / triangulation s | "
                      "landmarks s | retrieval s | recognizer s | total s | peak RAM MB (main / workers) | "
                      "map MB | map residual vs reference (median / RMS)")
        c = st.get("colmap")
        if c:
            al = c["alignment"]
            lines.append(f"| COLMAP (pycolmap defaults: SIFT, exhaustive, incremental) | {c['registered']}/{c['images']} | "
                         f"{c['pairs']} | {c['timings']['features']:.0f} | - | {c['timings']['matching'] + c['timings']['mapping']:.0f} "
                         f"(matching {c['timings']['matching']:.0f}, mapping {c['timings']['mapping']:.0f}) | - | - | - | "
                         f"{c['total_s']:.0f} | {c['peak_rss_mb']:.0f} / {c['peak_rss_workers_mb']:.0f} | "
                         f"{c['disk_bytes'] / 1e6:.1f} (database + model) | {al['residual_median']:.4f} / {al['residual_rms']:.4f} |")
        lines.append(f"| hloc-SIFT (issue 22, its own run) | {h['registered']} | {h['pairs']} | {h['features_s']} | - | "
                     f"{h['matching_s'] + h['mapping_s']} (matching {h['matching_s']}, mapping {h['mapping_s']}) | - | - | - | "
                     f"{h['features_s'] + h['matching_s'] + h['mapping_s']} | - | - | - |")
        for key, label in (("images", "pramloc, images alone, 112 photos"), ("images64", "pramloc, images alone, first 64"),
                           ("reference", "pramloc, reference poses (--colmap)")):
            b = st.get(key)
            if not b:
                continue
            t = b["timings"]
            pr = b["stats"].get("pairs", {})
            al = next(iter(b["localize"].values()))["alignment"]
            lines.append(f"| {label} | {b['registered']}/{b['photos']} | {pr.get('pairs', '-')} | {t.get('features', 0):.0f} | "
                         f"{t.get('pairs', 0):.0f} | {t.get('sfm', t.get('triangulation', 0)):.0f} | {t.get('landmarks', 0):.0f} | "
                         f"{t.get('retrieval', 0):.0f} | {t.get('recognizer', 0):.0f} | {b['build_s']:.0f} | "
                         f"{b['peak_memory_mb']:.0f} / {b['peak_rss_workers_mb']:.0f} | {b['map_bytes'] / 1e6:.1f} | "
                         + (f"{al['residual_median']:.4f} / {al['residual_rms']:.4f} |" if al else "- (the reference itself) |"))
        lines += [""] + head(None, "map | mode | localized | within 0.05,5° | 0.25,2° | 0.5,5° | 5,10° | median t (units) | "
                                   "median ° | paths (recog./retr.) | ms per query | w/o features ms | intrinsics")
        lines.append(f"| hloc-SIFT (issue 22) | exhaustive | 16/16 | {h['within_0.05_5deg']} | | | | {h['median_translation']} | "
                     f"{h['median_rotation_deg']} | | | | |")
        for key, label in (("images", "images alone, 112"), ("images64", "images alone, 64"), ("reference", "reference poses")):
            for mode, m in st.get(key, {}).get("localize", {}).items():
                lines.append(f"| {label} | {mode} | {m['localized']}/{m['queries']} | "
                             + " | ".join(f"{100 * v:.1f}%" for v in m["recall"].values())
                             + f" | {m['median_translation']:.4f} | {m['median_rotation_deg']:.3f} | "
                             f"{m['paths']['recognition']}/{m['paths']['retrieval']} | {m['median_ms']:.0f} | "
                             f"{m['median_ms_after_features']:.0f} | {'; '.join(m['intrinsics'])} |")
        extra = []
        if "build_vs_colmap" in r:
            extra.append(f"pramloc's whole build of the 112 photos / COLMAP's: {r['build_vs_colmap']:.2f}x")
        if "growth_112_vs_64" in r:
            extra.append(f"112-photo build / 64-photo build: {r['growth_112_vs_64']:.2f}x (exhaustive pairs: 6216 / 2016 = 3.1x)")
        if extra:
            lines += ["", "; ".join(extra) + "."]
    return lines


def pairs_table(pairs):
    """Pair selection on synthetic photo collections (bench/bench_pairs.py)."""
    lines = []
    for _, r in pairs.items():
        lines += head(f"Pair selection at scale, synthetic streets (bench/bench_pairs.py, k={r['k']}, "
                      f"{r['sequential']} sequential, {r['descriptors_per_photo']} descriptors per photo; {r['date']}, "
                      f"{r['commit']})", "photos | pairs | pairs per photo | exhaustive pairs | selection s | "
                      "pairs between overlapping photos")
        for row in r["rows"]:
            lines.append(f"| {row['photos']} | {row['pairs']} | {row['pairs_per_photo']} | {row['exhaustive_pairs']} | "
                         f"{row['seconds']:.1f} | {100 * row['share_overlapping']:.1f}% |")
    return lines


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def headline(builds, locs, exh, photos) -> list[str]:
    """One table, one screen: each scene, pramloc (`auto`) against its peers, with where each
    row comes from. Rows of the same scene and run are comparable; peers from the issues are
    their authors' measurements on this kind of machine."""
    lines = head(None, "scene | method | 5cm,5° | 25cm,2° | 50cm,5° | 5m,10° | median error | time per query | "
                 "map MB | build s | measured")
    for scene in ("7scenes-interleaved", "7scenes-block", "strecha"):
        loc, b = locs.get(scene), builds.get(scene)
        if loc:
            a = loc["modes"]["auto"]
            rec = list(a["recall"].values())
            lines.append(f"| {scene} | **pramloc** `auto` | {' | '.join(_pct(x) for x in rec)} | "
                         f"{a['median_translation_cm']} cm / {a['median_rotation_deg']:.2f}° | "
                         f"{a['time']['total']['median_ms']:.0f} ms | {mb(b['map_total_bytes']) if b else '-'} | "
                         f"{b['wall_s'] if b else 0:.0f} | {loc['date'][:10]}, {loc['commit']} |")
        e = exh.get(scene)
        if e:
            rec = list(e["recall"].values()) if isinstance(e["recall"], dict) else None
            cells = " | ".join(_pct(x) for x in rec) if rec else " | ".join(["-"] * 4)
            lines.append(f"| {scene} | hloc-style exhaustive matching, same features and model | {cells} | "
                         f"{e['median_translation_cm']} cm / {e['median_rotation_deg']:.2f}° | "
                         f"{e['median_time_without_features_ms']:.0f} ms + features | - | - | {e['date'][:10]}, {e['commit']} |")
        for row in HLOC.get(scene, []):
            lines.append(f"| {scene} | {row[0]} | " + " | ".join(c or "-" for c in row[1:]) + " | issue |")
    for scene, r in photos.items():
        st, h = r["steps"], r["hloc"]
        for key, label in (("images", "**pramloc** `auto`, map from the 112 photos alone"),
                           ("reference", "**pramloc** `auto`, map from the reference poses (`--colmap`)")):
            if key not in st:
                continue
            a = st[key]["localize"]["auto"]
            rec = list(a["recall"].values())
            lines.append(f"| {scene} (units) | {label} | {' | '.join(_pct(x) for x in rec)} | "
                         f"{a['median_translation']:.4f} / {a['median_rotation_deg']:.3f}° | {a['median_ms']:.0f} ms | "
                         f"{mb(st[key]['map_bytes'])} | {st[key]['build_s']:.0f} | {st[key]['date'][:10]}, {st[key]['commit']} |")
        if "colmap" in st:
            c = st["colmap"]
            lines.append(f"| {scene} (units) | COLMAP's own SfM of the 112 photos (pycolmap defaults, exhaustive pairs) | - | - | - | - | - | - | "
                         f"{c['disk_bytes'] / 1e6:.0f} (database + model) | {c['total_s']:.0f} | {c['date'][:10]}, {c['commit']} |")
        lines.append(f"| {scene} (units) | hloc-SIFT, exhaustive pairs (issue) | {h['within_0.05_5deg']} within 0.05/5° | - | - | - | "
                     f"{h['median_translation']} / {h['median_rotation_deg']}° | - | - | "
                     f"{h['features_s'] + h['matching_s'] + h['mapping_s']} | issue |")
    return lines


def _stamps(results: dict) -> str:
    """The distinct runs (date, commit) behind a table's JSON files."""
    return ", ".join(sorted({f"{r.get('date', '?')[:10]} {r.get('commit', '?')}" for r in results.values()}))


def _between(text: str, begin: str, end: str, lines: list[str]) -> str:
    """``text`` with what lies between the markers (included) replaced by ``lines``."""
    before, _, rest = text.partition(begin)
    _, _, after = rest.partition(end)
    return before + "\n".join(lines) + after


def main() -> Path:
    builds, recs, soaks = _load("build"), _load("recognition"), _load("soak")
    # The runs of bench_localize.py --threads (one worker's thread budget) are quoted in the issue 27 section.
    locs = {k: v for k, v in _load("localize").items() if "_threads" not in k}
    fails, exh = _load("failures"), _load("exhaustive")
    any_r = next(iter({**builds, **recs, **locs}.values()), {})
    runs = {"map building": builds, "recognition": recs, "localization": locs, "exhaustive reference": exh,
            "failure causes": fails}
    lines = [BEGIN, "",
             f"Machine: {any_r.get('machine', '?')}. Runs (date UTC, commit): "
             + "; ".join(f"{name} {_stamps(rs)}" for name, rs in runs.items() if rs) + ".",
             "Command: `python bench/run_all.py` (tables rendered by `python bench/report.py`); the tables "
             "after the localization table name their own runs.", ""]
    nights = {k: v for k, v in _load("night").items() if k.split("-")[0] in ("sift", "xfeat", "disk")}
    photos = _load("photos")
    tables = [(builds, build_table), (recs, recognition_table), (locs, lambda r: localize_table(r, builds)),
              (exh, lambda r: exhaustive_table(r, locs)), (fails, failures_table), (soaks, soak_table),
              (_load("seeds"), seeds_table), (_load("features"), features_table), (_load("degraded"), degraded_table),
              (nights, night_table), (photos, photos_table), (_load("pairs"), pairs_table)]
    for results, render in tables:
        if results:
            lines += render(results) + [""]
    lines.append(END)
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n\n" + BEGIN + "\n" + END + "\n"
    text = _between(text, BEGIN, END, lines)
    if HEAD_BEGIN in text:
        text = _between(text, HEAD_BEGIN, HEAD_END, [HEAD_BEGIN, ""] + headline(builds, locs, exh, photos) + ["", HEAD_END])
    DOC.write_text(text)
    print(f"wrote {DOC}")
    return DOC


if __name__ == "__main__":
    main()
