"""The README's Python snippet runs as printed (on a real map and photo, and on a failure)."""

from __future__ import annotations

import contextlib
import io
import re
import shutil

import numpy as np

from .conftest import frame
from .helpers import KITCHEN_CAMERA, ROOT


def _snippet() -> str:
    text = (ROOT / "README.md").read_text()
    after = text[text.index("From Python"):]
    return re.search(r"```python\n(.*?)```", after, re.S).group(1)


def _run(code: str, map_dir, query) -> str:
    code = code.replace('"maps/kitchen"', repr(str(map_dir))).replace('"query.jpg"', repr(str(query)))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {})
    return out.getvalue()


def test_readme_snippet_localizes_and_reports_failures(kitchen_map, kitchen_root, tmp_path):
    code = _snippet()
    assert 'loc.localize("query.jpg")' in code  # the camera is optional in the call shown
    query = tmp_path / "query.jpg"
    shutil.copy(kitchen_root / frame(3), query)
    printed = _run(code, kitchen_map, query)
    path, rest = printed.split(" ", 1)
    assert path in ("recognition", "retrieval"), printed
    assert "'features':" in rest  # the stage times (ms)
    # A photo that cannot be localized prints its reason instead of crashing.
    blank = tmp_path / "blank.png"
    import cv2

    cv2.imwrite(str(blank), np.full((480, 640), 128, np.uint8))
    assert _run(code, kitchen_map, blank).startswith("failed: too few keypoints")


def test_a_camera_for_another_resolution_is_scaled_and_said(kitchen_map, kitchen_root, tmp_path):
    import cv2

    from pramloc.geometry import Camera
    from pramloc.localize import Localizer

    big = tmp_path / "big.png"
    cv2.imwrite(str(big), cv2.resize(cv2.imread(str(kitchen_root / frame(3))), (1280, 960)))
    r = Localizer(kitchen_map).localize(big, Camera.from_string(KITCHEN_CAMERA))
    assert r.pose is not None and r.intrinsics == "given"
    assert r.notes["camera"] == "the given camera is for 640x480, scaled to the image's 1280x960"
    assert "scaled to the image's 1280x960" in r.summary()
