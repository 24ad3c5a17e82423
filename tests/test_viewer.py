"""``pramloc viz``: the viewer page of a small real map with real localized queries, opened
in a real headless browser (Debian's chromium).

Without chromium the browser test skips, except under CI (``CI=true``), where it fails.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from pramloc import localize, viewer
from pramloc.cli import main as cli
from pramloc.evaluate import load_ground_truth

from .conftest import _in_ci, frame

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--enable-unsafe-swiftshader", "--enable-logging=stderr", "--v=0",
                  "--window-size=1280,1000", "--virtual-time-budget=5000"]
# Put first in the page's <head>: console.error/warn calls (plotly.js warns through
# console.log) become one marked console line each, which chromium logs to stderr.
CONSOLE_HOOK = """<script>
['error', 'warn'].forEach(function (level) {
  var orig = console[level];
  console[level] = function () { console.log('PAGE-CONSOLE-' + level + ': ' + Array.from(arguments).join(' '));
                                 orig.apply(console, arguments); };
});
</script>"""
PAGE_PROBLEM = re.compile(r'CONSOLE.*"(Uncaught|PAGE-CONSOLE-|WARN:|ERROR:)')


@pytest.fixture(scope="module")
def results(kitchen_map, kitchen_root, tmp_path_factory) -> Path:
    """Real localized queries (and their log) between the small map's frames."""
    split = tmp_path_factory.mktemp("viewer") / "q.txt"
    split.write_text("".join(frame(i) + "\n" for i in (3, 21, 39)))
    out = split.with_name("res.txt")
    queries = localize.query_list(dataset="7scenes", root=kitchen_root, queries=split)
    assert localize.main(kitchen_map, queries, out, "retrieval")["failed"] == 0
    return out


@pytest.fixture(scope="module")
def chromium() -> str:
    """The browser's executable (asked for first, so that a skip comes before any work)."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        if _in_ci():
            pytest.fail("CI=true but chromium is missing (scripts/install.sh installs it)")
        pytest.skip("chromium not installed (apt-get install chromium): the viewer is not opened in a browser")
    return exe


def open_in_browser(chromium: str, page: Path, tmp_path: Path) -> tuple[np.ndarray, list[str]]:
    """Screenshot (BGR) of ``page`` in headless chromium and the page's console problems."""
    hooked = tmp_path / "hooked.html"
    hooked.write_text(page.read_text(encoding="utf-8").replace("<head>", "<head>" + CONSOLE_HOOK, 1),
                      encoding="utf-8")
    shot = tmp_path / "shot.png"
    proc = subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}",
                           f"--screenshot={shot}", hooked.as_uri()],
                          capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0 and shot.is_file(), proc.stderr[-2000:]
    return cv2.imread(str(shot)), [line for line in proc.stderr.splitlines() if PAGE_PROBLEM.search(line)]


def plot_area(img: np.ndarray) -> np.ndarray:
    """The 3D scene of the screenshot: below the page's header, between legend and colour bar."""
    h, w = img.shape[:2]
    return img[int(0.15 * h):int(0.8 * h), int(0.25 * w):int(0.85 * w)]


def saturated_hues(plot: np.ndarray) -> np.ndarray:
    """Hue bins (of 18) of the saturated pixels: plotly's background, grid and text are all
    grey or pale blue."""
    hsv = cv2.cvtColor(plot, cv2.COLOR_BGR2HSV)
    sat = hsv[..., 1] > 120
    return np.bincount(hsv[..., 0][sat] // 10, minlength=18)


@pytest.mark.parametrize("with_gt", [False, True], ids=["by-path", "by-error"])
def test_page_renders_in_headless_chromium(chromium, kitchen_map, kitchen_root, results, tmp_path, with_gt):
    gt = load_ground_truth("7scenes", kitchen_root)[0] if with_gt else None
    page = viewer.main(kitchen_map, [results], gt, tmp_path / "page.html")
    img, problems = open_in_browser(chromium, page, tmp_path)
    assert problems == [], "\n".join(problems)
    plot = plot_area(img)
    hues = saturated_hues(plot)
    # Points in several landmark colours (a blank or failed scene has no saturated pixels).
    assert hues.sum() > 300 and np.count_nonzero(hues > 10) >= 4, hues
    if not with_gt:  # the retrieval queries' black frusta
        assert np.count_nonzero(plot.max(axis=2) < 40) > 50


def test_cli_page_is_self_contained(kitchen_map, kitchen_root, results, tmp_path, monkeypatch):
    monkeypatch.setattr(viewer, "MAX_POINTS", 100)
    out = tmp_path / "viewer.html"
    two = tmp_path / "again" / results.name  # a second run with the same stem
    two.parent.mkdir()
    shutil.copy(results, two)
    res = CliRunner().invoke(cli, ["-q", "viz", str(kitchen_map), "--results", str(results), "--results",
                                   str(two), "--gt-dataset", "7scenes", "--gt-root", str(kitchen_root),
                                   "--out", str(out)])
    assert res.exit_code == 0, res.output + repr(res.exception)
    text = out.read_text(encoding="utf-8").replace("\\u002f", "/")  # plotly escapes "/" in its JSON
    assert not re.search(r"<script[^>]+src=", text), "the page must not load scripts from elsewhere"
    assert "plotly.js v" in text  # embedded
    for expected in (frame(21), "by error", "ground truth (3)", "inliers", f"{results.parent.name}/res",
                     "again/res: 3 localized, 0 failed", "(no log record)", "points (100 of "):
        assert expected in text, expected


def test_cli_gt_options_checked(kitchen_map, kitchen_root, results, tmp_path):
    res = CliRunner().invoke(cli, ["viz", str(kitchen_map), "--results", str(results), "--gt-root",
                                   str(kitchen_root), "--out", str(tmp_path / "v.html")])
    assert res.exit_code == 2 and "give --gt-dataset and --gt-root together" in res.output
    assert not (tmp_path / "v.html").exists()
