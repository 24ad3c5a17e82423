"""The map PNG: robust axis limits (synthetic points), three labelled views (real map)."""

from __future__ import annotations

import numpy as np

from pramloc import viz


def test_limits_ignore_stray_points_but_keep_cameras():
    rng = np.random.default_rng(0)
    u, v = rng.normal(0, 1, 1000), rng.normal(0, 0.1, 1000)
    u[:3] = 500.0                       # a few stray points far away
    (x0, x1), (y0, y1) = viz._robust_limits(u, v, np.array([-8.0]), np.array([0.5]))
    assert x1 < 10 and x0 <= -8.0       # the stray points do not flatten the scene; the camera is in
    assert y0 < -0.2 and y1 >= 0.5


def test_png_has_three_views(kitchen_map, tmp_path):
    import matplotlib.image

    from pramloc.mapio import load_map

    path = viz.render_png(load_map(kitchen_map), tmp_path / "m.png")
    img = matplotlib.image.imread(path)
    assert img.shape[1] > 2 * img.shape[0]                      # three panels side by side
    coloured = (img[..., :3].max(-1) - img[..., :3].min(-1)) > 0.2
    thirds = np.array_split(coloured, 3, axis=1)
    assert all(t.mean() > 0.005 for t in thirds)                 # points drawn in every view
