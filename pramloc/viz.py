"""Landmark-coloured point clouds: PLY (open3d) and a PNG render."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import logger
from .mapio import LandmarkMap


def landmark_colors(labels: np.ndarray, num: int) -> np.ndarray:
    """(P,) landmark ids -> (P, 3) float colours in [0, 1], distinct per landmark."""
    import matplotlib

    cmap = matplotlib.colormaps["tab20"]
    palette = np.array([cmap(i % 20)[:3] for i in range(max(num, 1))])
    # Shuffle deterministically so neighbouring ids get different colours.
    palette = palette[np.random.default_rng(0).permutation(len(palette))]
    hue_shift = (np.arange(len(palette)) // 20)[:, None] * 0.13
    return np.clip(palette * (1 - hue_shift) + hue_shift * 0.5, 0, 1)[labels]


def write_ply(m: LandmarkMap, path: Path) -> Path:
    import open3d as o3d

    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(m.xyz.astype(np.float64)))
    pcd.colors = o3d.utility.Vector3dVector(landmark_colors(m.point_landmark, m.num_landmarks))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not o3d.io.write_point_cloud(str(path), pcd):
        from .errors import PramlocError

        raise PramlocError(f"{path}: cannot write PLY")
    return path


def scene_up(poses) -> np.ndarray:
    """(3,) unit "up" of a scene in world coordinates: the mean of its cameras' up (image y
    points down), since world frames differ per dataset. ``poses`` world-to-camera."""
    up = np.stack([-p.R[1] for p in poses]).mean(0)
    return up / max(float(np.linalg.norm(up)), 1e-9)


def robust_limits(points: np.ndarray, cameras: np.ndarray, margin: float = 0.05) -> np.ndarray:
    """(D, 2) axis limits of (N, D) ``points`` and (M, D) ``cameras``: the central 98% of the
    points on each axis (a few stray points, e.g. far triangulations, must not shrink the scene
    to a band in empty space) and every camera, padded by ``margin`` of the extent."""
    points, cameras = np.atleast_2d(points), np.atleast_2d(cameras)
    lo, hi = (np.percentile(points, [1, 99], axis=0) if len(points) else (np.zeros(cameras.shape[1]),
                                                                         np.ones(cameras.shape[1])))
    if len(cameras):
        lo, hi = np.minimum(lo, cameras.min(0)), np.maximum(hi, cameras.max(0))
    pad = margin * np.maximum(hi - lo, 1e-6)
    return np.stack([lo - pad, hi + pad], 1)


def render_png(m: LandmarkMap, path: Path, size: tuple[int, int] = (1500, 560)) -> Path:
    """Render points (landmark colours) and camera centres in three orthographic views,
    with axes in map units (metres for maps built with metric poses):

    - top view: looking down the cameras' mean "up" direction;
    - front view: looking along the horizontal direction of least spread of the points
      (towards a facade or a wall);
    - side view: looking along the scene's main horizontal axis.

    Uses matplotlib (works without a display or GPU)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    xyz = m.xyz.astype(np.float64)
    centers = np.stack([p.center for p in m.poses])
    up = scene_up(m.poses)
    mean = np.median(xyz, 0)
    flat = (xyz - mean) - np.outer((xyz - mean) @ up, up)  # horizontal components
    _, _, vt = np.linalg.svd(flat, full_matrices=False)
    a = vt[0] - up * (vt[0] @ up)
    a /= max(np.linalg.norm(a), 1e-9)  # main horizontal axis
    b = np.cross(up, a)                # horizontal axis of least spread
    fig = Figure(figsize=(size[0] / 100, size[1] / 100), dpi=100)
    FigureCanvasAgg(fig)
    cols = landmark_colors(m.point_landmark, m.num_landmarks)
    views = [(a, b, "top view", "main axis", "across"), (a, up, "front view", "main axis", "up"),
             (b, up, "side view", "across", "up")]
    for k, (u, v, title, xlabel, ylabel) in enumerate(views, 1):
        axis = fig.add_subplot(1, 3, k)
        pu, pv, cu, cv = (xyz - mean) @ u, (xyz - mean) @ v, (centers - mean) @ u, (centers - mean) @ v
        axis.scatter(pu, pv, c=cols, s=3, linewidths=0)
        axis.scatter(cu, cv, c="k", s=10, marker="^", label="map cameras")
        (x0, x1), (y0, y1) = robust_limits(np.stack([pu, pv], 1), np.stack([cu, cv], 1))
        axis.set_xlim(x0, x1)
        axis.set_ylim(y0, y1)
        axis.set_aspect("equal", adjustable="box")
        axis.set_title(title)
        axis.set_xlabel(f"{xlabel} (map units)", fontsize=8)
        axis.set_ylabel(f"{ylabel} (map units)", fontsize=8)
        axis.tick_params(labelsize=7)
        axis.grid(alpha=0.3)
    fig.axes[0].legend(loc="lower left", fontsize=8)
    fig.suptitle(f"{m.path.name if m.path else 'map'}: {len(xyz)} points, {m.num_landmarks} landmarks, "
                 f"{len(m.poses)} map cameras (map units: metres when the poses are metric)", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def main(m: LandmarkMap, out_dir: Path, png: bool = True) -> dict[str, Path]:
    """Write ``landmarks.ply`` (and ``landmarks.png``) into ``out_dir``; returns the paths."""
    out_dir = Path(out_dir)
    written = {"ply": write_ply(m, out_dir / "landmarks.ply")}
    if png:
        written["png"] = render_png(m, out_dir / "landmarks.png")
    logger.info("Wrote %s", ", ".join(str(p) for p in written.values()))
    return written
