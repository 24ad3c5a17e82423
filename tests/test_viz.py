"""The map PNG: robust axis limits (synthetic points), three labelled views (real map)."""

from __future__ import annotations

import numpy as np

from pramloc import viz


def test_limits_ignore_stray_points_but_keep_cameras():
    rng = np.random.default_rng(0)
    u, v = rng.normal(0, 1, 1000), rng.normal(0, 0.1, 1000)
    u[:3] = 500.0                       # a few stray points far away
    (x0, x1), (y0, y1) = viz.robust_limits(np.stack([u, v], 1), np.array([[-8.0, 0.5]]))
    assert x1 < 10 and x0 <= -8.0       # the stray points do not flatten the scene; the camera is in
    assert y0 < -0.2 and y1 >= 0.5


def test_viewer_frames_the_map_not_its_stray_points(kitchen_map):
    """The 3D page's axes hold the map cameras and the bulk of the points in true proportions;
    far stray points do not shrink the scene to a dot."""
    from pramloc.mapio import load_map
    from pramloc.viewer import scene_box

    m = load_map(kitchen_map)
    centres = np.stack([p.center for p in m.poses])
    xyz = np.asarray(m.xyz, np.float64).copy()
    xyz[:5] = xyz.mean(0) + 1000.0          # a few far triangulations
    m.xyz = xyz
    box = scene_box(m)
    lo, hi = (np.array([box[f"{a}axis"]["range"][i] for a in "xyz"]) for i in (0, 1))
    assert np.all(centres >= lo) and np.all(centres <= hi)
    assert np.all(hi - lo < 50)                                   # the stray points are outside
    ratio = np.array([box["aspectratio"][a] for a in "xyz"])
    assert np.allclose(ratio, (hi - lo) / (hi - lo).max())        # metric proportions


def test_png_has_three_views(kitchen_map, tmp_path):
    import matplotlib.image

    from pramloc.mapio import load_map

    path = viz.render_png(load_map(kitchen_map), tmp_path / "m.png")
    img = matplotlib.image.imread(path)
    assert img.shape[1] > 2 * img.shape[0]                      # three panels side by side
    coloured = (img[..., :3].max(-1) - img[..., :3].min(-1)) > 0.2
    thirds = np.array_split(coloured, 3, axis=1)
    assert all(t.mean() > 0.005 for t in thirds)                 # points drawn in every view
