"""Interactive 3D viewer: one self-contained HTML page of a map and localized queries.

The page embeds plotly.js (no network needed to open it) and shows

- the map's points coloured by landmark (at most :data:`MAX_POINTS`, subsampled evenly);
- the map cameras as grey frusta (hover: image name);
- each results file's localized queries as frusta, coloured by path (recognition,
  retrieval) or, with ground truth, by camera-centre error; hovering a query's centre shows
  its log record (path, landmarks, inliers, matches, times, reason) and clicking it prints
  the record below the plot;
- with ground truth, the true centres of the queries as black crosses.

Poses are world-to-camera everywhere, as in COLMAP: ``x_cam = R @ x_world + t``; a camera's
centre is ``-R^T t``. Results files hold ``name qw qx qy qz tx ty tz`` lines; the JSON-lines
log beside a results file ``DIR/STEM.txt`` is ``DIR/STEM_log.jsonl`` (optional).
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import logger
from .errors import PramlocError
from .evaluate import load_ground_truth, pose_errors, read_results, run_labels, viewing_direction
from .geometry import Camera, Pose
from .io import log_path, read_poses
from .mapio import LandmarkMap, load_map

MAX_POINTS = 30_000
PATH_COLORS = {"recognition": "#ff00ff", "retrieval": "#000000"}  # not in the landmark palette
NO_PATH_COLOR = "#9467bd"  # queries without a log record
RUN_SYMBOLS = ("diamond", "square", "circle", "cross", "x", "diamond-open", "square-open", "circle-open")
# Queries with ground truth: colour by log10 of the camera-centre error, 1 mm (blue) to 10 m (red).
ERROR_TICKS = {-3: "1 mm", -2: "1 cm", -1: "10 cm", 0: "1 m", 1: "10 m"}
QUERY_ASPECT = 0.75  # results carry no intrinsics: query frusta have a 4:3 image, 90 deg field of view


@dataclass
class Run:
    """One results file: localized poses (world-to-camera) and the log records by name."""

    label: str
    poses: dict[str, Pose]
    records: dict[str, dict] = field(default_factory=dict)

    @property
    def failed(self) -> list[str]:
        return [n for n, r in self.records.items() if r.get("pose") is None]


def load_run(results: Path, label: str, gt: dict[str, Pose] | None = None) -> Run:
    """A results file and its log (when present); with ``gt``, every name must be in it."""
    poses = read_poses(results) if gt is None else read_results(results, gt)
    records = {}
    log = log_path(results)
    if log.is_file():
        for lineno, line in enumerate(log.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    rec = json.loads(line)
                    records[rec["name"]] = rec
                except (ValueError, KeyError, TypeError):
                    raise PramlocError(f"{log}:{lineno}: not a localization log record") from None
    else:
        logger.info("%s: no log beside the results; queries are shown without details", log)
    return Run(label, poses, records)


# ---------------------------------------------------------------- geometry

def frustum_corners(camera: Camera | None) -> np.ndarray:
    """(4, 3) image corners in the camera frame at depth 1 (``camera`` None: the query shape)."""
    if camera is None:
        return np.array([[-1, -QUERY_ASPECT, 1], [1, -QUERY_ASPECT, 1], [1, QUERY_ASPECT, 1],
                         [-1, QUERY_ASPECT, 1]], dtype=np.float64)
    w, h = camera.width, camera.height
    px = np.array([[0, 0, 1], [w, 0, 1], [w, h, 1], [0, h, 1]], dtype=np.float64)
    return px @ np.linalg.inv(camera.K()).T


def frustum_lines(pose: Pose, corners: np.ndarray, size: float) -> np.ndarray:
    """(14, 3) world polyline of one frustum (apex to each corner, then the image
    rectangle), ending in a NaN row that separates it from the next one; ``size`` is the
    depth of the image plane."""
    cam = corners * size
    world = (cam - pose.tvec) @ pose.R  # R^T (x_cam - t), row-wise
    c = pose.center
    order = [c, world[0], c, world[1], c, world[2], c, world[3], world[0], world[1], world[2], world[3],
             world[0]]
    return np.vstack(order + [np.full(3, np.nan)])


def polylines(poses: list[Pose], corners: list[np.ndarray], size: float) -> np.ndarray:
    if not poses:
        return np.zeros((0, 3))
    return np.vstack([frustum_lines(p, k, size) for p, k in zip(poses, corners)])


def scene_size(m: LandmarkMap) -> float:
    """A length for the frusta: 6% of the diagonal of the 5-95 percentile box of the scene."""
    pts = np.vstack([m.xyz.astype(np.float64), np.stack([p.center for p in m.poses])])
    lo, hi = np.percentile(pts, [5, 95], axis=0)
    return 0.06 * float(np.linalg.norm(hi - lo)) or 1.0


def _unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-9)


def view(m: LandmarkMap) -> dict:
    """plotly's scene camera: the map cameras' mean "up" (world frames differ per dataset;
    image y points down) and an eye behind and above them, looking where they look."""
    from .viz import scene_up

    up = scene_up(m.poses)
    forward = _unit(np.stack([viewing_direction(p) for p in m.poses]).mean(0))
    eye = 1.6 * _unit(-forward + 0.7 * up)
    return {"up": dict(zip("xyz", up.tolist())), "eye": dict(zip("xyz", eye.tolist()))}


# ---------------------------------------------------------------- traces

def _xyz(a: np.ndarray) -> dict:
    return {"x": a[:, 0], "y": a[:, 1], "z": a[:, 2]}


def point_trace(m: LandmarkMap):
    import plotly.graph_objects as go

    from .viz import landmark_colors

    idx = np.arange(len(m.xyz))
    if len(idx) > MAX_POINTS:
        idx = np.sort(np.random.default_rng(0).choice(idx, MAX_POINTS, replace=False))
    rgb = (landmark_colors(m.point_landmark, m.num_landmarks)[idx] * 255).round().astype(int)
    name = f"points ({len(idx)} of {len(m.xyz)}), by landmark"
    return go.Scatter3d(**_xyz(m.xyz[idx]), mode="markers", name=name,
                        marker={"size": 2, "color": [f"rgb({r},{g},{b})" for r, g, b in rgb]},
                        text=[f"landmark {l}" for l in m.point_landmark[idx]], hoverinfo="text")


def map_camera_traces(m: LandmarkMap, size: float) -> list:
    import plotly.graph_objects as go

    lines = polylines(m.poses, [frustum_corners(c) for c in m.cameras], size)
    centers = np.stack([p.center for p in m.poses])
    return [go.Scatter3d(**_xyz(lines), mode="lines", name=f"map cameras ({len(m.poses)})",
                         legendgroup="map", line={"color": "#888888", "width": 2}, hoverinfo="skip"),
            go.Scatter3d(**_xyz(centers), mode="markers", legendgroup="map", showlegend=False,
                         marker={"size": 2, "color": "#888888"}, text=m.image_names, hoverinfo="text")]


def describe(name: str, record: dict | None, error: tuple[float, float] | None) -> str:
    """Hover text of one query: its log record, one field a line."""
    lines = [f"<b>{html.escape(name)}</b>"]
    if error is not None:
        lines.append(f"error {error[0]:.3f} m, {error[1]:.2f} deg")
    if record is None:
        return "<br>".join(lines + ["(no log record)"])
    lines += [f"path {record.get('path')}",
              f"landmarks {record.get('landmarks')}",
              f"inliers {record.get('num_inliers')} / matches {record.get('num_matches')} "
              f"(keypoints {record.get('num_keypoints')})",
              "times " + ", ".join(f"{k} {v:.0f}" for k, v in record.get("times", {}).items())
              + f" ms (total {record.get('time_total_ms', 0):.0f})"]
    if record.get("reason"):
        lines.append(f"reason {html.escape(str(record['reason']))}")
    return "<br>".join(lines)


def query_traces(run: Run, symbol: str, size: float, gt: dict[str, Pose] | None) -> list:
    """A run's frusta and centres: one pair per path, or one pair coloured by error with ``gt``."""
    names = list(run.poses)
    paths = [run.records.get(n, {}).get("path", "unknown") for n in names]
    errors = {n: pose_errors(run.poses[n], gt[n]) for n in names} if gt is not None else {}
    groups = ({"": names} if gt is not None else
              {p: [n for n, q in zip(names, paths) if q == p] for p in dict.fromkeys(paths)})
    traces = []
    for path, group in groups.items():
        label = f"{run.label}: {path} ({len(group)})" if path else f"{run.label} ({len(group)}), by error"
        traces += _query_pair(run, group, label, symbol, size, errors, PATH_COLORS.get(path, NO_PATH_COLOR))
    return traces


def _query_pair(run: Run, names: list[str], label: str, symbol: str, size: float,
                errors: dict[str, tuple[float, float]], color: str) -> list:
    import plotly.graph_objects as go

    poses = [run.poses[n] for n in names]
    lines = polylines(poses, [frustum_corners(None)] * len(poses), size)
    centers = np.stack([p.center for p in poses]) if poses else np.zeros((0, 3))
    if errors:
        err = np.log10(np.maximum([errors[n][0] for n in names], 1e-6))
        lo, hi = min(ERROR_TICKS), max(ERROR_TICKS)
        # Lists: plotly.js takes no typed array as a line colour.
        shade = {"color": np.repeat(err, len(lines) // len(names)).tolist(), "colorscale": "Turbo", "cmin": lo, "cmax": hi}
        marker = {**shade, "color": err.tolist(),
                  "colorbar": {"title": "position error", "len": 0.5, "tickvals": list(ERROR_TICKS),
                               "ticktext": list(ERROR_TICKS.values())}}
    else:
        shade = marker = {"color": color}
    group = f"{run.label}:{label}"
    records = [json.dumps(run.records.get(n, {"name": n}), indent=1) for n in names]
    # The legend shows the centres: plotly.js draws no legend line for an array of line colours.
    return [go.Scatter3d(**_xyz(lines), mode="lines", legendgroup=group, showlegend=False,
                         line={**shade, "width": 4}, hoverinfo="skip"),
            go.Scatter3d(**_xyz(centers), mode="markers", name=label, legendgroup=group,
                         marker={**marker, "size": 5, "symbol": symbol},
                         text=[describe(n, run.records.get(n), errors.get(n)) for n in names],
                         hoverinfo="text", customdata=records)]


def gt_trace(runs: list[Run], gt: dict[str, Pose]):
    import plotly.graph_objects as go

    names = sorted({n for r in runs for n in (*r.poses, *r.records) if n in gt})
    centers = np.stack([gt[n].center for n in names]) if names else np.zeros((0, 3))
    return go.Scatter3d(**_xyz(centers), mode="markers", name=f"ground truth ({len(names)})",
                        marker={"size": 3, "color": "black", "symbol": "x"},
                        text=[f"{n} (ground truth)" for n in names], hoverinfo="text")


# ---------------------------------------------------------------- page

PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif;margin:0.5em}} #record{{white-space:pre-wrap;font-size:12px}}</style>
</head><body>
<h3 style="margin:0.2em">{title}</h3><div>{summary}</div>
{plot}
<div>Click a query to show its log record:</div><pre id="record"></pre>
</body></html>
"""

CLICK_JS = """var gd = document.getElementById('{plot_id}');
gd.on('plotly_click', function (ev) {
  var p = ev.points[0];
  if (p.customdata !== undefined) { document.getElementById('record').textContent = p.customdata; }
});"""


def figure(m: LandmarkMap, runs: list[Run], gt: dict[str, Pose] | None):
    import plotly.graph_objects as go

    size = scene_size(m)
    traces = [point_trace(m), *map_camera_traces(m, size)]
    for i, run in enumerate(runs):
        traces += query_traces(run, RUN_SYMBOLS[i % len(RUN_SYMBOLS)], size, gt)
    if gt is not None and runs:
        traces.append(gt_trace(runs, gt))
    fig = go.Figure(traces)
    fig.update_layout(height=800, margin={"l": 0, "r": 0, "t": 10, "b": 0}, legend={"x": 0, "y": 1},
                      scene={**scene_box(m, runs), "camera": view(m)})
    return fig


def scene_box(m: LandmarkMap, runs: Sequence[Run] = ()) -> dict:
    """plotly scene axes framing the map: the central 98% of its points on each axis, every
    map camera and the localized queries near them (a query hundreds of map sizes away, a wrong
    pose, is left outside rather than shrinking the map to a dot), true proportions."""
    from .viz import robust_limits

    centres = np.stack([p.center for p in m.poses])
    box = robust_limits(np.asarray(m.xyz, np.float64), centres)
    queries = np.array([p.center for r in runs for p in r.poses.values()]).reshape(-1, 3)
    mid, extent = box.mean(1), float(np.ptp(box, 1).max())
    near = queries[np.abs(queries - mid).max(1) < 5 * extent]
    if len(near):
        box = robust_limits(np.asarray(m.xyz, np.float64), np.concatenate([centres, near]))
    span = np.ptp(box, 1)
    ratio = span / span.max()
    return {**{f"{a}axis": {"range": box[i].tolist(), "autorange": False} for i, a in enumerate("xyz")},
            "aspectmode": "manual", "aspectratio": dict(zip("xyz", ratio.tolist()))}


def summary(m: LandmarkMap, runs: list[Run]) -> str:
    parts = [f"map: {len(m.image_names)} images, {len(m.xyz)} points, {m.num_landmarks} landmarks"]
    for r in runs:
        failed = r.failed
        parts.append(f"{html.escape(r.label)}: {len(r.poses)} localized, {len(failed)} failed"
                     + (f" ({html.escape(', '.join(failed[:5]))}{', ...' if len(failed) > 5 else ''})"
                        if failed else ""))
    return "<br>".join(parts)


def ground_truth(dataset: str | None = None, root: Path | None = None,
                 model: Path | None = None) -> dict[str, Pose] | None:
    """Ground-truth poses (world-to-camera) from a dataset (``dataset`` with ``root``) or a
    COLMAP model folder, as ``pramloc evaluate`` reads them; None when neither is given."""
    if (dataset is None) != (root is None):
        raise PramlocError("give --gt-dataset and --gt-root together")
    if dataset is not None and model is not None:
        raise PramlocError("give the ground truth once: --gt-dataset with --gt-root, or --gt-model")
    if dataset is None and model is None:
        return None
    return load_ground_truth(dataset, root, model)[0]


def main(map_path: Path, results: Sequence[Path] = (), gt: dict[str, Pose] | None = None,
         out: Path = Path("viewer.html")) -> Path:
    """Write the viewer page of the map at ``map_path`` with the queries of ``results`` (world-to-
    camera results files); ``gt`` (name -> world-to-camera pose) colours them by error.
    Returns ``out``."""
    m = load_map(map_path)
    paths = [Path(p) for p in results]
    runs = [load_run(p, label, gt) for p, label in zip(paths, run_labels(paths))]
    fig = figure(m, runs, gt)
    plot = fig.to_html(full_html=False, include_plotlyjs=True, post_script=CLICK_JS,
                       config={"displaylogo": False})
    title = html.escape(f"pramloc: {Path(map_path).name}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(PAGE.format(title=title, summary=summary(m, runs), plot=plot), encoding="utf-8")
    return out
