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


def render_png(m: LandmarkMap, path: Path, size: tuple[int, int] = (1024, 768)) -> Path:
    """Render points (landmark colours) and camera centres seen from above the scene.

    Uses matplotlib (works without a display or GPU)."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    xyz = m.xyz.astype(np.float64)
    centers = np.stack([p.center for p in m.poses])
    # View from the side opposite the cameras' mean "up" (world frames differ per dataset).
    ups = np.stack([-p.R[1] for p in m.poses]).mean(0)
    up = ups / max(np.linalg.norm(ups), 1e-9)
    mean = xyz.mean(0)
    _, _, vt = np.linalg.svd(xyz - mean, full_matrices=False)
    a = vt[0] - up * (vt[0] @ up)
    a /= max(np.linalg.norm(a), 1e-9)
    b = np.cross(up, a)
    fig = Figure(figsize=(size[0] / 100, size[1] / 100), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 2, 1)
    cols = landmark_colors(m.point_landmark, m.num_landmarks)
    for axis, (u, v, title) in zip([ax, fig.add_subplot(1, 2, 2)],
                                   [(a, b, "top view"), (a, up, "side view")]):
        axis.scatter((xyz - mean) @ u, (xyz - mean) @ v, c=cols, s=4, linewidths=0)
        axis.scatter((centers - mean) @ u, (centers - mean) @ v, c="k", s=6, marker="^", label="map cameras")
        axis.set_aspect("equal", adjustable="datalim")
        axis.set_title(title)
        axis.set_xticks([])
        axis.set_yticks([])
    fig.axes[0].legend(loc="lower left", fontsize=8)
    fig.suptitle(f"{m.path.name if m.path else 'map'}: {len(xyz)} points, {m.num_landmarks} landmarks")
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
