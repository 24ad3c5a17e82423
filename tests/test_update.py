"""``update-map``: a small real 7-Scenes map grown with the next frames."""

from __future__ import annotations

import hashlib
import shutil
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest

from pramloc import mapio, update
from pramloc.config import load_config
from pramloc.datasets import load_dataset
from pramloc.errors import PramlocError

from .conftest import frame
from .helpers import CLI, ENV

# A recognizer trained and fine-tuned for a few dozen steps: enough to exercise every stage.
QUICK = ["landmarks.num_landmarks=8", "landmarks.min_points_per_landmark=10", "triangulation.num_pairs=5",
         "recognizer.min_steps=60", "recognizer.steps_per_image=0", "recognizer.val_every=30"]
UPDATE = {"num_pairs": 5, "min_steps": 30, "steps_per_new_image": 0}


def _split(path: Path, frames) -> Path:
    path.write_text("".join(frame(i) + "\n" for i in frames))
    return path


def _digest(folder: Path) -> dict[str, str]:
    """sha256 of every file of a map folder (by relative path)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _copy(src: Path, dst: Path) -> Path:
    """A map and its build cache (the features an update reuses)."""
    from pramloc.build import cache_dir

    shutil.copytree(src, dst)
    if cache_dir(src).exists():
        shutil.copytree(cache_dir(src), cache_dir(dst))
    return dst


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    d = tmp_path_factory.mktemp("update_splits")
    return {"old": _split(d / "old.txt", range(0, 48, 6)), "new": _split(d / "new.txt", range(48, 96, 6)),
            "both": _split(d / "both.txt", range(24, 96, 6)), "query": _split(d / "query.txt", [27, 45])}


@pytest.fixture(scope="module")
def base_map(tmp_path_factory, kitchen_root, splits) -> Path:
    """A small trained map of frames 0-42 (every 6th)."""
    from pramloc import build

    out = tmp_path_factory.mktemp("update_maps") / "base"
    build.main(load_config("indoor", QUICK), load_dataset("7scenes", kitchen_root, splits["old"]), out)
    return out


@pytest.fixture(scope="module")
def grown(tmp_path_factory, base_map, kitchen_root, splits):
    """The base map grown with frames 48-90 while a localizer holds the old version: the map,
    the localizer, its answer to a query before the update, and the update's result."""
    from pramloc.localize import Localizer

    path = _copy(base_map, tmp_path_factory.mktemp("grown") / "map")
    q = load_dataset("7scenes", kitchen_root, splits["query"]).images[0]
    loc = Localizer(path)
    before = loc.localize(kitchen_root / q.name, q.camera, q.name)
    result = update.main(path, load_dataset("7scenes", kitchen_root, splits["both"]), UPDATE)
    return {"path": path, "loc": loc, "query": q, "before": before, "result": result}


def test_update_adds_photos_points_and_keeps_landmark_ids(base_map, grown):
    m0, m1 = mapio.load_map(base_map), mapio.load_map(grown["path"])
    r = grown["result"]
    assert r["changed"] and r["version"] == 2
    assert m1.image_names[:len(m0.image_names)] == m0.image_names  # old photos first, in their order
    assert sorted(r["images_added"]) == m1.image_names[len(m0.image_names):] and len(r["images_added"]) == 8
    assert len(m1.xyz) > len(m0.xyz) and r["points_added"] > 0
    # Landmark ids are stable: the old landmarks keep their centres, new ones come after them.
    L0 = m0.num_landmarks
    assert m1.num_landmarks == L0 + r["landmarks_added"]
    np.testing.assert_array_equal(m1.landmark_centers[:L0], m0.landmark_centers)
    # The map points keep their landmark: compare the landmark seen at each observation of the old photos.
    same = total = before = 0
    for i in range(len(m0.image_names)):
        o0 = {tuple(np.round(k, 2)): m0.point_landmark[p] for k, p in
              zip(m0.image_keypoints[m0.image_offsets[i]:m0.image_offsets[i + 1]], m0.image_point_ids(i))}
        o1 = {tuple(np.round(k, 2)): m1.point_landmark[p] for k, p in
              zip(m1.image_keypoints[m1.image_offsets[i]:m1.image_offsets[i + 1]], m1.image_point_ids(i))}
        common = o0.keys() & o1.keys()
        before += len(o0)
        total += len(common)
        same += sum(o0[k] == o1[k] for k in common)
    assert total > 0.9 * before  # the old observations are still there
    assert same >= 0.95 * total  # (a few map points merged by triangulation take one landmark)
    # The old photos gained observations (of points triangulated with the new ones).
    assert len(m1.image_points) > len(m0.image_points)
    # The recognizer was fine-tuned over every landmark, new ones included; the retrieval index has every photo.
    from pramloc.recognition import Recognizer

    rec = Recognizer.load(m1.recognizer_path)
    assert rec.num_landmarks == m1.num_landmarks
    assert len(mapio.retrieval_index(m1).to_arrays()["vectors"]) == len(m1.image_names)
    hist = m1.manifest["history"]
    assert [h["version"] for h in hist] == [1, 2] and hist[1]["images_added"] == 8


def test_localizer_holding_the_old_version_answers_the_same(grown, kitchen_root):
    from pramloc.localize import Localizer

    q, before, loc = grown["query"], grown["before"], grown["loc"]
    after = loc.localize(kitchen_root / q.name, q.camera, q.name)
    assert before.pose is not None and after.pose is not None
    np.testing.assert_array_equal(after.pose.qvec, before.pose.qvec)
    np.testing.assert_array_equal(after.pose.tvec, before.pose.tvec)
    assert after.num_inliers == before.num_inliers
    # A localizer started now reads the new version.
    assert len(Localizer(grown["path"]).map.image_names) == len(loc.map.image_names) + 8


def test_update_with_nothing_new_leaves_the_map_unchanged(grown, kitchen_root, splits):
    path = grown["path"]
    digest = _digest(path)
    for split in ("both", "old"):  # photos the map holds already (all of them, or some)
        r = update.main(path, load_dataset("7scenes", kitchen_root, splits[split]), UPDATE)
        assert not r["changed"] and r["version"] == 2
    assert _digest(path) == digest


def test_killed_update_leaves_the_old_map_intact(base_map, kitchen_root, splits, tmp_path):
    path = _copy(base_map, tmp_path / "map")
    digest = _digest(path)
    cmd = CLI + ["update-map", str(path), "--dataset", "7scenes", "--root", str(kitchen_root),
                 "--split", str(splits["new"]), "--workers", "1", "--set", "min_steps=100000"]
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stderr:  # kill it while it fine-tunes, the new map.h5 written beside the old map
            if "Fine-tuning the landmark recognizer" in line:
                break
        staged = [p for p in tmp_path.iterdir() if p.name.startswith(".map.tmp-")]
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert staged and any((p / "map.h5").exists() for p in staged)  # it was killed mid-way
    assert _digest(path) == digest
    assert mapio.load_map(path).manifest["counts"]["images"] == 8
    # The next update completes (and clears what the killed one left).
    r = update.main(path, load_dataset("7scenes", kitchen_root, splits["new"]), UPDATE)
    assert r["changed"] and not any(p.name.startswith(".map.tmp-") for p in tmp_path.iterdir())


def test_update_registers_photos_without_poses(base_map, kitchen_root, splits, tmp_path):
    from pramloc.evaluate import pose_errors

    path = _copy(base_map, tmp_path / "map")
    new = load_dataset("7scenes", kitchen_root, _split(tmp_path / "new.txt", range(48, 72, 6)))
    r = update.main(path, new, UPDATE, use_poses=False)
    m = mapio.load_map(path)
    assert r["changed"] and m.manifest["history"][-1]["poses"] == "registered"
    for name in r["images_added"]:
        dt, dr = pose_errors(m.poses[m.image_names.index(name)], new[name].pose)
        assert dt < 0.1 and dr < 3.0, (name, dt, dr)  # 7-Scenes ground truth: good to a few cm
    assert set(r["images_added"]) | set(r["unregistered"]) == set(new.names)


def test_cli_update_and_info_history(base_map, kitchen_root, splits, tmp_path):
    path = _copy(base_map, tmp_path / "map")
    run = lambda *a: subprocess.run(CLI + list(a), env=ENV, capture_output=True, text=True)  # noqa: E731
    p = run("update-map", str(path), "--dataset", "7scenes", "--root", str(kitchen_root), "--split",
            str(_split(tmp_path / "new.txt", [48, 54, 60])), "--set", "min_steps=20", "--set", "num_pairs=5")
    assert p.returncode == 0, p.stderr
    assert "version 2, 3 photo(s) added" in p.stdout
    info = run("info", str(path))
    assert info.returncode == 0
    assert "version 1:" in info.stdout and "version 2:" in info.stdout and "3 photo(s) added" in info.stdout
    bad = run("update-map", str(tmp_path / "missing"), "--dataset", "7scenes", "--root", str(kitchen_root),
              "--split", str(splits["new"]))
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "map folder not found" in bad.stderr


def test_bad_update_input_is_one_error(base_map, tmp_path):
    from pramloc.datasets import ImageRecord, Scene

    path = _copy(base_map, tmp_path / "map")
    digest = _digest(path)
    scene = Scene(tmp_path, [ImageRecord("missing.jpg")])
    with pytest.raises(PramlocError) as e:
        update.main(path, scene, UPDATE)
    assert "missing.jpg: image not found" in str(e.value) and "\n" not in str(e.value)
    assert _digest(path) == digest


def test_cli_missing_map_is_said_before_the_photos_are_read(kitchen_root, tmp_path):
    """A map that is not there is the one error, before the new photos' folder is listed."""
    from click.testing import CliRunner

    from pramloc.cli import main

    (tmp_path / "photos").mkdir()
    res = CliRunner().invoke(main, ["update-map", str(tmp_path / "nomap"), "--images", str(tmp_path / "photos")])
    assert res.exit_code == 2 and res.output.strip().endswith("map folder not found"), res.output
    assert len(res.output.strip().splitlines()) == 1


def test_another_process_holding_the_old_version_answers_the_same(base_map, kitchen_root, splits, tmp_path):
    """A localizing process started before the update (the map memory-mapped, as in `pramloc
    localize` and `pramloc serve`) answers a query the same before and after the map it loaded
    is replaced."""
    import sys

    path = _copy(base_map, tmp_path / "map")
    q = load_dataset("7scenes", kitchen_root, splits["query"]).images[0]
    script = (
        "import sys\n"
        "from pramloc import runtime\nruntime.configure()\n"
        "from pramloc.geometry import Camera\nfrom pramloc.localize import Localizer\n"
        f"loc = Localizer({str(path)!r})\n"
        f"cam = Camera.from_string({q.camera.to_string()!r})\n"
        "for _ in range(2):\n"
        f"    r = loc.localize({str(kitchen_root / q.name)!r}, cam, 'q')\n"
        "    print(r.lines()[0].strip(), r.num_inliers, len(loc.map.image_names), flush=True)\n"
        "    sys.stdin.readline()\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, env=ENV)
    try:
        before = proc.stdout.readline().split()
        assert before and before[0] == "q", before
        result = update.main(path, load_dataset("7scenes", kitchen_root, splits["new"]), UPDATE)
        assert result["changed"]
        proc.stdin.write("\n")
        proc.stdin.flush()
        after = proc.stdout.readline().split()
        assert after == before  # same pose, inliers and map images: the old version it holds
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.wait(timeout=60) == 0
    finally:
        proc.kill()
    assert len(mapio.load_map(path).image_names) == int(before[-1]) + 8  # the new version on disk
