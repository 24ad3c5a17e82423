"""Pose-accuracy evaluation against ground truth, and retrieval recall@N.

Poses are world-to-camera everywhere (``x_cam = R @ x_world + t``). Errors:

- translation error: distance between the camera centres ``-R^T t`` (dataset units, metres);
- rotation error: the angle of ``R_est @ R_gt^T`` in degrees.

A query of the query set that a results file does not contain counts as a failure with
infinite error: it never falls within a threshold and it is included in the medians (so
the median is infinite when more than half of the queries are missing). In the JSON
report an infinite error is written as ``null``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import logger
from .errors import PramlocError
from .geometry import Pose

# (translation in metres, rotation in degrees)
DEFAULT_THRESHOLDS: tuple[tuple[float, float], ...] = ((0.05, 5.0), (0.25, 2.0), (0.5, 5.0), (5.0, 10.0))


# ---------------------------------------------------------------- metrics

def pose_errors(est: Pose, gt: Pose) -> tuple[float, float]:
    """(translation error between camera centres, rotation error in degrees)."""
    dt = float(np.linalg.norm(est.center - gt.center))
    cos = (np.trace(est.R @ gt.R.T) - 1.0) / 2.0
    dr = float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))
    return dt, dr


def parse_thresholds(text: str) -> list[tuple[float, float]]:
    """``"0.05,5;0.25,2"`` -> [(0.05, 5.0), (0.25, 2.0)] (metres, degrees)."""
    out = []
    for part in text.split(";"):
        if not part.strip():
            continue
        vals = part.split(",")
        try:
            t, r = (float(v) for v in vals)
        except ValueError:
            raise PramlocError(
                f"--thresholds: {part.strip()!r} is not 'metres,degrees' "
                f"(expected e.g. \"0.05,5;0.25,2;0.5,5;5,10\")") from None
        if not (t > 0 and r > 0 and math.isfinite(t) and math.isfinite(r)):
            raise PramlocError(f"--thresholds: {part.strip()!r} must be two positive numbers")
        out.append((t, r))
    if not out:
        raise PramlocError("--thresholds: no thresholds given")
    return out


def evaluate(results: dict[str, Pose], gt: dict[str, Pose],
             thresholds=DEFAULT_THRESHOLDS, queries: list[str] | None = None) -> dict:
    """Compare estimated poses with ground truth over the query set.

    ``queries`` defaults to all images of ``gt``; results for images outside the query set
    are ignored, results for images not in ``gt`` are an error. Returns::

        {"num_queries", "num_localized", "missing": [names],
         "median_translation", "median_rotation_deg",
         "recall": [{"translation": m, "rotation_deg": d, "recall": fraction}, ...],
         "per_query": {name: {"translation": m, "rotation_deg": d}}}   # inf if missing
    """
    queries = list(gt) if queries is None else list(queries)
    unknown = [n for n in results if n not in gt]
    if unknown:
        raise PramlocError(f"results name {len(unknown)} image(s) not in the ground truth, e.g. {unknown[0]!r}")
    no_gt = [n for n in queries if n not in gt]
    if no_gt:
        raise PramlocError(f"{len(no_gt)} query image(s) have no ground-truth pose, e.g. {no_gt[0]!r}")
    if not queries:
        raise PramlocError("the query set is empty")

    per_query, missing = {}, []
    for name in queries:
        if name in results:
            dt, dr = pose_errors(results[name], gt[name])
        else:
            dt, dr = math.inf, math.inf
            missing.append(name)
        per_query[name] = {"translation": dt, "rotation_deg": dr}
    errs_t = np.array([e["translation"] for e in per_query.values()])
    errs_r = np.array([e["rotation_deg"] for e in per_query.values()])
    recall = [{"translation": t, "rotation_deg": r, "recall": float(np.mean((errs_t <= t) & (errs_r <= r)))}
              for t, r in thresholds]
    return {
        "num_queries": len(queries),
        "num_localized": len(queries) - len(missing),
        "missing": missing,
        "median_translation": float(np.median(errs_t)),
        "median_rotation_deg": float(np.median(errs_r)),
        "recall": recall,
        "per_query": per_query,
    }


# ---------------------------------------------------------------- alignment

@dataclass
class Similarity:
    """``x_ref = scale * R @ x_map + t``: a map's frame into the reference's."""

    scale: float
    R: np.ndarray
    t: np.ndarray

    def apply_pose(self, pose: Pose) -> Pose:
        """A world-to-camera pose of the map's frame in the reference's (same camera)."""
        center = self.scale * self.R @ pose.center + self.t
        R = pose.R @ self.R.T
        return Pose.from_Rt(R, -R @ center)


ALIGN_MAX_ERROR = 0.25  # first RANSAC inlier threshold: this share of the reference cameras' spread
ALIGN_MAD_FACTOR = 3.0  # then inliers: residuals within this many robust standard deviations (1.4826 MAD)
ALIGN_AXIS = 1.0        # camera axes enter as points this share of the spread in front of / beside the centre


def align_to_reference(map_poses: dict[str, Pose], gt: dict[str, Pose],
                       max_error: float | None = None) -> tuple[Similarity, dict]:
    """The similarity taking a map's frame to the reference's, from the cameras of the images
    both hold: their centres, each with two points on its optical and x axes (at
    :data:`ALIGN_AXIS` x the spread of the centres: the centres alone leave the rotation free
    when they lie on a line, as along a corridor). LO-RANSAC (pycolmap) with inlier threshold
    ``max_error`` (reference units; default :data:`ALIGN_MAX_ERROR` x the median distance of
    the centres to their mean: gross errors out), then least squares on the cameras whose
    centres lie within :data:`ALIGN_MAD_FACTOR` robust standard deviations (the threshold
    adapts to the noise of both frames). Returns the similarity and a record: images shared,
    inliers, scale, residuals of the inliers' centres (median, RMS, max; reference units)."""
    import pycolmap

    common = [n for n in map_poses if gt_name(n, gt) in gt]
    if len(common) < 3:
        raise PramlocError(f"alignment: the map and the reference share {len(common)} image(s); need at least 3")
    src = np.stack([map_poses[n].center for n in common])
    tgt = np.stack([gt[gt_name(n, gt)].center for n in common])
    src_axes = np.stack([map_poses[n].R[[0, 2]] for n in common])  # (N, 2, 3): x and optical axes, world frame
    tgt_axes = np.stack([gt[gt_name(n, gt)].R[[0, 2]] for n in common])
    spread = float(np.median(np.linalg.norm(tgt - tgt.mean(0), axis=1)))
    src_spread = float(np.median(np.linalg.norm(src - src.mean(0), axis=1)))
    if spread <= 0 or src_spread <= 0:
        raise PramlocError(f"alignment: the {len(common)} shared cameras stand at one place")
    opts = pycolmap.RANSACOptions()
    opts.max_error = float(max_error if max_error is not None else ALIGN_MAX_ERROR * spread)
    d = ALIGN_AXIS * spread

    def points(scale: float) -> tuple[np.ndarray, np.ndarray]:
        """(3N, 3) source and target points: each camera's centre and two axis points."""
        s_pts = np.concatenate([src[:, None], src[:, None] + src_axes * d / scale], 1)
        t_pts = np.concatenate([tgt[:, None], tgt[:, None] + tgt_axes * d], 1)
        return s_pts.reshape(-1, 3), t_pts.reshape(-1, 3)

    scale = spread / src_spread
    for _ in range(2):  # the axis points need the scale: refined once
        first = pycolmap.estimate_sim3d_robust(*points(scale), opts)
        if first is None:
            raise PramlocError(f"alignment: no similarity fits the cameras of the {len(common)} shared images")
        sim = first["tgt_from_src"]
        scale = float(sim.scale)
    res = np.linalg.norm(sim * src - tgt, axis=1)
    inl = res <= min(opts.max_error, max(ALIGN_MAD_FACTOR * 1.4826 * float(np.median(res)), 1e-12 * spread))
    if inl.sum() < 3:
        raise PramlocError(f"alignment: only {int(inl.sum())} of {len(common)} cameras agree")
    out = _fit_similarity(src[inl], tgt[inl], src_axes[inl], tgt_axes[inl])
    res = np.linalg.norm(out.scale * src @ out.R.T + out.t - tgt, axis=1)
    record = {"images": len(common), "inliers": int(inl.sum()), "max_error": opts.max_error, "scale": out.scale,
              "residual_median": float(np.median(res[inl])), "residual_rms": float(np.sqrt(np.mean(res[inl] ** 2))),
              "residual_max": float(res[inl].max()), "outliers": [n for n, i in zip(common, inl) if not i]}
    return out, record


def _fit_similarity(src: np.ndarray, tgt: np.ndarray, src_axes: np.ndarray, tgt_axes: np.ndarray) -> Similarity:
    """Least-squares similarity of camera centres (N, 3) and axes (N, A, 3) (Umeyama's
    closed form, with the axes as unit directions beside the centres scaled by their spread:
    the rotation needs no scale, so centres and axes weigh alike whatever the frames' units)."""
    a, b = src - src.mean(0), tgt - tgt.mean(0)
    sa, sb = np.sqrt((a ** 2).sum(1).mean()), np.sqrt((b ** 2).sum(1).mean())
    H = (a / sa).T @ (b / sb) + np.einsum("nai,naj->ij", src_axes, tgt_axes)  # sum of src tgt^T
    U, _, Vt = np.linalg.svd(H)
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(Vt.T @ U.T))])
    R = Vt.T @ D @ U.T
    scale = float(np.sum(b * (a @ R.T)) / np.sum(a * a))
    return Similarity(scale, R, tgt.mean(0) - scale * R @ src.mean(0))


def align_results(results: dict[str, Pose], map_path: Path, gt: dict[str, Pose]) -> tuple[dict[str, Pose], dict]:
    """``results`` (in the frame of the map at ``map_path``) in the reference's frame
    (:func:`align_to_reference` on the map images' poses), and the alignment's record."""
    from .mapio import load_map

    m = load_map(map_path, lazy=True)
    sim, record = align_to_reference(dict(zip(m.image_names, m.poses)), gt)
    return {n: sim.apply_pose(p) for n, p in results.items()}, {"map": str(map_path), **record}


def results_map(path: Path) -> Path:
    """The map a results file was localized against, as its log records it."""
    from .io import log_path

    log = log_path(path)
    try:
        with open(log, encoding="utf-8") as f:
            for line in f:
                record = json.loads(line)
                if record.get("map"):
                    return Path(record["map"])
    except (OSError, ValueError):
        pass
    raise PramlocError(f"{path}: its log {log} names no map to align with; give the map: --align MAP")


# ---------------------------------------------------------------- retrieval

def viewing_direction(pose: Pose) -> np.ndarray:
    """(3,) the camera's optical axis (its z axis) in world coordinates, ``R^T[:, 2]``."""
    return pose.R[2]


def retrieval_recall(retrieved: dict[str, list[str]], query_poses: dict[str, Pose],
                     db_poses: dict[str, Pose], max_distance: float = 0.5, max_angle: float = 30.0,
                     ns=(1, 5, 10)) -> dict:
    """Share of queries with a positive among their top-N retrieved database images.

    A positive is a database image whose camera centre is within ``max_distance`` (metres)
    of the query's and whose viewing direction is within ``max_angle`` degrees. The query
    set is ``query_poses``; a query without a retrieval list counts as a failure.
    Returns ``{"recall@1": r, "recall@5": r, ..., "num_queries": n,
    "num_without_positive": queries with no positive in the whole database}``.
    """
    for q, dbs in retrieved.items():
        if q not in query_poses:
            raise PramlocError(f"retrieval: query {q!r} has no ground-truth pose")
        bad = [d for d in dbs if d not in db_poses]
        if bad:
            raise PramlocError(f"retrieval: database image {bad[0]!r} (for query {q!r}) has no ground-truth pose")
    if not query_poses:
        raise PramlocError("retrieval: the query set is empty")
    db_names = list(db_poses)
    db_c = np.stack([db_poses[n].center for n in db_names])
    db_d = np.stack([viewing_direction(db_poses[n]) for n in db_names])
    cos_max = math.cos(math.radians(max_angle))
    hits = {n: 0 for n in ns}
    without_positive = 0
    for q, pose in query_poses.items():
        positive = (np.linalg.norm(db_c - pose.center, axis=1) <= max_distance) & (db_d @ viewing_direction(pose) >= cos_max)
        positives = {db_names[i] for i in np.flatnonzero(positive)}
        without_positive += not positives
        ranked = retrieved.get(q, [])
        for n in ns:
            hits[n] += any(d in positives for d in ranked[:n])
    out = {f"recall@{n}": hits[n] / len(query_poses) for n in ns}
    out.update(num_queries=len(query_poses), num_without_positive=without_positive)
    return out


# ---------------------------------------------------------------- files

def load_ground_truth(dataset: str | None = None, root: Path | None = None, gt_model: Path | None = None,
                      gt_poses: Path | None = None, queries: Path | None = None) -> tuple[dict[str, Pose], list[str]]:
    """Ground-truth poses and the query set (the ``queries`` split, else all GT images).

    Exactly one source: ``dataset`` + ``root`` (``pramloc.datasets`` loaders), ``gt_model``
    (a COLMAP model folder) or ``gt_poses`` (a ``name qw qx qy qz tx ty tz`` file).
    """
    from .io import read_image_list

    if sum(x is not None for x in (dataset, gt_model, gt_poses)) != 1:
        raise PramlocError("give the ground truth once: --dataset (with --root), --gt-model or --gt-poses")
    if dataset is not None:
        from .datasets import apply_split, load_dataset

        scene = load_dataset(dataset, root)
        gt = {im.name: im.pose for im in scene.images if im.pose is not None}
        names = apply_split(scene.names, queries, root) if queries else list(gt)
    else:
        if gt_model is not None:
            from .io.colmap import read_colmap_model

            rec = read_colmap_model(gt_model)
            gt = {im.name: Pose.from_pycolmap(im.cam_from_world()) for im in rec.images.values() if im.has_pose}
            source = gt_model
        else:
            from .io import read_poses

            gt, source = read_poses(gt_poses), gt_poses
        if not gt:
            raise PramlocError(f"{source}: no ground-truth poses")
        names = [gt_name(n, gt) for n in read_image_list(queries)] if queries else list(gt)
        unknown = [n for n in names if n not in gt]
        if unknown:
            raise PramlocError(f"{queries}: {len(unknown)} image(s) not in the ground truth {source}, "
                               f"e.g. {unknown[0]!r}")
    no_pose = [n for n in names if n not in gt]
    if no_pose:
        raise PramlocError(f"{queries}: {len(no_pose)} query image(s) have no ground-truth pose, e.g. {no_pose[0]!r}")
    if not names:
        raise PramlocError("the query set is empty")
    return gt, names


def gt_name(name: str, gt: dict[str, Pose]) -> str:
    """The ground-truth name of image ``name``: itself, else the one ground-truth name that
    is the same file seen from another folder (``images/0001.jpg`` vs ``0001.jpg``: one
    ends with ``/`` + the other); ``name`` unchanged when there is none or more than one."""
    if name in gt:
        return name
    same = [g for g in gt if name.endswith("/" + g) or g.endswith("/" + name)]
    return same[0] if len(same) == 1 else name


def read_results(path: Path, gt: dict[str, Pose]) -> dict[str, Pose]:
    """A results file, checking that every image it names is in the ground truth (names
    are matched with :func:`gt_name`)."""
    from .io import read_poses

    results = {gt_name(n, gt): pose for n, pose in read_poses(path).items()}
    unknown = [n for n in results if n not in gt]
    if unknown:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
        lineno = next(i for i, line in enumerate(lines, 1)
                      if line.strip() and line.strip().rsplit(maxsplit=7)[0] == unknown[0])
        example = next(iter(gt))
        raise PramlocError(f"{path}:{lineno}: image {unknown[0]!r} is not in the ground truth "
                           f"(ground-truth names look like {example!r})")
    return results


def run_labels(paths: list[Path]) -> list[str]:
    """File stems, with the parent folder added where two stems are the same or the stem
    says nothing (``herzjesu/results``), numbered where two labels are still the same."""
    stems = [p.stem for p in paths]
    labels = [f"{p.parent.name}/{p.stem}" if (stems.count(p.stem) > 1 or p.stem == "results") and p.parent.name
              else p.stem for p in paths]
    return [f"{lab} ({i + 1})" if labels.count(lab) > 1 else lab for i, lab in enumerate(labels)]


def _json_safe(obj):
    """Infinite errors (unlocalized queries) become ``null``."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_json_safe(v) for v in obj]
    return obj


def format_table(report: dict) -> str:
    """One row per results file: localized/queries, medians and the share within each threshold."""
    head = ["results file", "localized", "missing", "median t", "median R (deg)"]
    head += [f"{th['translation']:g}m,{th['rotation_deg']:g}deg" for th in report["thresholds"]]
    rows = []
    for run in report["runs"]:
        m = run["metrics"]
        row = [run["label"], f"{m['num_localized']}/{m['num_queries']}", str(len(m["missing"])),
               f"{m['median_translation']:.4f}", f"{m['median_rotation_deg']:.3f}"]
        row += [f"{100 * r['recall']:.1f}%" for r in m["recall"]]
        rows.append(row)
    widths = [max(len(r[i]) for r in [head] + rows) for i in range(len(head))]

    def fmt(row):
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))

    lines = [fmt(head), "  ".join("-" * w for w in widths)] + [fmt(r) for r in rows]
    if any(not math.isfinite(run["metrics"]["median_translation"]) for run in report["runs"]):
        lines.append("median inf: at least half of the queries were not localized (a missing query "
                     "counts as an infinite error)")
    return "\n".join(lines)


def main(results_paths: list[Path], gt: dict[str, Pose], queries: list[str] | None = None,
         thresholds=DEFAULT_THRESHOLDS, json_out: Path | None = None, plot_out: Path | None = None,
         align: bool | Path = False) -> dict:
    """Evaluate several results files against the same ground truth, side by side.

    ``align``: the results are in a map's own frame (a map built from images alone): each
    file is first taken into the ground truth's frame by :func:`align_results`, with the map
    ``align`` (a path), or (``True``) the map its log names; its run then carries
    ``alignment`` (the residuals in ground-truth units).

    Writes the JSON report (``json_out``) and the cumulative-error plot (``plot_out``) if
    given, and returns ``{"thresholds": [{"translation", "rotation_deg"}], "num_queries",
    "runs": [{"label", "path", "metrics": evaluate(...)}], "json", "plot"}`` (the JSON file
    holds the same, with infinite errors as ``null``).
    """
    if not results_paths:
        raise PramlocError("no results files given")
    paths = [Path(p) for p in results_paths]
    thresholds = [(float(t), float(r)) for t, r in thresholds]
    runs = []
    query_set = set(gt if queries is None else queries)
    for label, path in zip(run_labels(paths), paths):
        results = read_results(path, gt)
        ignored = sum(n not in query_set for n in results)
        if ignored:
            logger.info("%s: %d pose(s) of images outside the query set ignored", path, ignored)
        run = {"label": label, "path": str(path)}
        if align:
            results, run["alignment"] = align_results(results, results_map(path) if align is True else Path(align), gt)
        run["metrics"] = evaluate(results, gt, thresholds, queries)
        runs.append(run)
    report = {"thresholds": [{"translation": t, "rotation_deg": r} for t, r in thresholds],
              "num_queries": runs[0]["metrics"]["num_queries"], "runs": runs,
              "json": str(json_out) if json_out else None, "plot": str(plot_out) if plot_out else None}
    if json_out is not None:
        json_out = Path(json_out)
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(_json_safe(report), indent=1) + "\n")
    if plot_out is not None:
        from .plots import plot_cumulative_errors

        curves = {run["label"]: run["metrics"]["per_query"] for run in runs}
        plot_cumulative_errors(curves, plot_out, thresholds)
    return report
