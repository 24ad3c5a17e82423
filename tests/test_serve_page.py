"""The page of ``pramloc serve`` in a real browser: Debian's chromium, headless, driven by
Playwright (the system browser; nothing downloaded). Upload a real query photo, wait for
the answer, check the pose against ``pramloc localize`` and that the 3D view drew the
query camera.

Without chromium or playwright the test skips, except under CI (``CI=true``), where it fails.
"""

from __future__ import annotations

import re
import shutil

import cv2
import numpy as np
import pytest

from .conftest import _in_ci, frame
from .helpers import KITCHEN_CAMERA
from .test_serve import cli_pose, start_server

TOKEN = "page-token"
CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         "--enable-unsafe-swiftshader"]  # WebGL (plotly's 3D scene) on the CPU


@pytest.fixture(scope="module")
def browser():
    """Headless chromium (the system's) under Playwright."""
    if shutil.which(CHROMIUM) is None:
        if _in_ci():
            pytest.fail(f"CI=true but {CHROMIUM} is missing (scripts/install.sh installs it)")
        pytest.skip(f"{CHROMIUM} not installed: the page is not opened in a browser")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if _in_ci():
            pytest.fail("CI=true but playwright is missing (pip install -e '.[test]')")
        pytest.skip("playwright not installed")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def server(kitchen_map):
    s = start_server([kitchen_map], "--workers", "1", "--token", TOKEN)
    yield s
    assert s.stop() == 0, "\n".join(s.lines)


def dark_pixels(png: bytes, legend: dict, box: dict) -> int:
    """Near-black pixels of a screenshot of the plot (``box``), outside its legend: the
    retrieval path's frustum colour (points are coloured by landmark, map cameras grey,
    axis text #444)."""
    img = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    dark = img.max(axis=2) < 50
    x0, y0 = int(legend["x"] - box["x"]), int(legend["y"] - box["y"])
    dark[max(0, y0):y0 + int(legend["height"]) + 1, max(0, x0):x0 + int(legend["width"]) + 1] = False
    return int(dark.sum())


def test_page_localizes_a_photo_and_draws_its_camera(browser, server, kitchen_map, kitchen_root, tmp_path):
    image = kitchen_root / frame(27)
    line, _ = cli_pose(kitchen_map, image, tmp_path, KITCHEN_CAMERA)
    expected = [float(v) for v in line.split()[1:]]

    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    requests, problems = [], []
    page.on("request", lambda r: requests.append(r.url))
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.goto(server.url + "/")
    # Without the token the server refuses the page's requests, and the page says so.
    page.wait_for_selector('#status[data-state="error"]', timeout=30_000)
    assert "401" in page.text_content("#status")
    page.fill("#token", TOKEN)
    page.dispatch_event("#token", "change")
    page.wait_for_selector('#status[data-state="ready"]', timeout=60_000)
    assert page.eval_on_selector("#map", "s => s.value") == "kitchen"
    plot = page.locator("#plot")
    box, legend = plot.bounding_box(), page.locator("#plot .legend").bounding_box()
    before = dark_pixels(plot.screenshot(), legend, box)

    page.fill("#camera", KITCHEN_CAMERA)
    page.set_input_files("#file", str(image))
    page.wait_for_selector('#status[data-state="done"], #status[data-state="failed"], #status[data-state="error"]',
                           timeout=60_000)
    assert page.get_attribute("#status", "data-state") == "done", page.text_content("#status")
    text = page.text_content("#pose")
    qvec = re.search(r"qvec \(w x y z\): (.*)", text).group(1).split()
    tvec = re.search(r"tvec: +(.*)", text).group(1).split()
    # The page shows 10 significant digits, as pramloc.io.pose_line writes the CLI's results.
    assert [float(v) for v in qvec + tvec] == expected, (text, line)
    assert f"intrinsics: given ({KITCHEN_CAMERA})" in text and "path retrieval" in text

    names = page.evaluate("Array.from(document.getElementById('plot').data, t => t.name || '')")
    query = [n for n in names if n.startswith("query ")]
    assert len(query) == 2 and any(image.name in n and "retrieval (1)" in n for n in query), names
    page.wait_for_timeout(500)  # let WebGL draw the new traces
    after = dark_pixels(plot.screenshot(), page.locator("#plot .legend").bounding_box(), plot.bounding_box())
    assert after > before + 30, (before, after)  # the query camera's frustum, drawn in the 3D view

    assert all(u.startswith(server.url + "/") for u in requests), requests  # nothing from elsewhere
    assert [p for p in problems if "401" not in p] == [], problems
    page.close()
