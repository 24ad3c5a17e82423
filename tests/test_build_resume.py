"""Interrupted and repeated builds (:mod:`pramloc.build`): a killed build leaves no map
and resumes; builds are deterministic and independent of the point order."""

from __future__ import annotations

import signal
import subprocess
import time

import numpy as np
import pytest

from pramloc import mapio
from pramloc.config import PipelineConfig
from pramloc.datasets import load_dataset
from pramloc.errors import PramlocError
from pramloc.io import read_image_list
from pramloc.io.colmap import read_colmap_model


from .helpers import CLI, ENV, fixture_config


def _wait_then_kill(proc: subprocess.Popen, ready, timeout: float = 60.0) -> bool:
    """SIGKILL ``proc`` as soon as ``ready()``; False if it finished first."""
    t0 = time.monotonic()
    while proc.poll() is None and time.monotonic() - t0 < timeout:
        if ready():
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.005)
    proc.wait()
    return False


def _same_points(a: mapio.LandmarkMap, b: mapio.LandmarkMap) -> bool:
    return a.xyz.shape == b.xyz.shape and np.array_equal(np.unique(a.xyz, axis=0), np.unique(b.xyz, axis=0))


def test_killed_build_leaves_no_map_and_resumes(kitchen_map, kitchen_root, kitchen_split, tmp_path):
    """SIGKILL during start-up, during feature extraction and while the map folder is being
    written (its recognizer training, a window of seconds): never a folder at --out that
    loads; the re-run resumes from the cached stages, cleans up after the killed runs, and
    gives the map of an uninterrupted build."""
    out = tmp_path / "maps/kitchen"
    cache = out.parent / ".kitchen.cache"
    _, config = fixture_config(kitchen_map, tmp_path)
    args = [*CLI, "build-map", "--dataset", "7scenes", "--root", str(kitchen_root), "--split", str(kitchen_split),
            "--out", str(out), "--no-train", "--config", str(config)]
    t0 = [0.0]
    points = {
        "after 2 s": lambda: time.monotonic() - t0[0] > 2.0,
        "during features": lambda: any(cache.glob("features-*.h5")),
        "while writing the map": lambda: any(out.parent.glob(".kitchen.tmp-*")),
    }
    training = [a for a in args if a != "--no-train"] + ["--train-minutes", "0.2"]
    for what, ready in points.items():
        t0[0] = time.monotonic()
        proc = subprocess.Popen(training if what == "while writing the map" else args, env=ENV,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert _wait_then_kill(proc, ready), f"the build finished before the kill point {what!r}"
        if out.exists():
            with pytest.raises(PramlocError):
                mapio.load_map(out)
    assert not out.exists() and any(out.parent.glob(".kitchen.tmp-*"))
    res = subprocess.run(args, env=ENV, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "features of 0 images (8 cached)" in res.stderr  # resumed
    assert "Reusing the cached sparse model" in res.stderr
    assert sorted(p.name for p in out.parent.iterdir()) == [".kitchen.cache", "kitchen"]  # cleaned up
    resumed, fresh = mapio.load_map(out), mapio.load_map(kitchen_map)
    assert len(resumed.image_names) == 8 and abs(len(resumed.xyz) - len(fresh.xyz)) < 0.1 * len(fresh.xyz)
    assert _same_points(resumed, fresh) and np.array_equal(resumed.point_landmark, fresh.point_landmark)


def test_build_is_deterministic(kitchen_map, kitchen_root, kitchen_split, tmp_path):
    """Two builds of the same small map (same inputs and seeds, separate caches) give the
    same landmarks, points and retrieval vocabulary."""
    from pramloc import build

    conf = PipelineConfig.from_dict(fixture_config(kitchen_map, tmp_path)[0])
    out = tmp_path / "again/kitchen"
    build.main(conf, load_dataset("7scenes", kitchen_root, kitchen_split), out, train=False)
    a, b = mapio.load_map(out), mapio.load_map(kitchen_map)
    assert np.array_equal(a.point_landmark, b.point_landmark) and np.array_equal(a.xyz, b.xyz)
    assert np.array_equal(a.landmark_centers, b.landmark_centers)
    assert np.array_equal(a.retrieval["vocabulary"], b.retrieval["vocabulary"])


def test_landmarks_do_not_depend_on_point_order(kitchen_map, kitchen_split, tmp_path):
    """pycolmap iterates a model's points in hash-map order, which differs between the
    model triangulated in memory and the same model read back from the build cache: the
    landmarks must not depend on it, else a resumed build differs from a fresh one. Here:
    the fixture's cached model, and the same model with its points3D.txt lines shuffled
    (same ids, other insertion order)."""
    import random

    import pycolmap

    from pramloc import landmarks
    from pramloc.io import read_features

    cache = kitchen_map.parent / f".{kitchen_map.name}.cache"
    rec = pycolmap.Reconstruction(str(next(cache.glob("sfm-*"))))
    text = tmp_path / "model"
    text.mkdir()
    rec.write_text(str(text))
    lines = (text / "points3D.txt").read_text().splitlines(keepends=True)
    body = [line for line in lines if not line.startswith("#")]
    random.Random(0).shuffle(body)
    (text / "points3D.txt").write_text("".join(body))
    shuffled = read_colmap_model(text)
    assert sorted(shuffled.points3D) == sorted(rec.points3D) and list(shuffled.points3D) != list(rec.points3D)
    names = read_image_list(kitchen_split)
    feats = next(cache.glob("features-*.h5"))
    desc = [read_features(feats, n)["descriptors"] for n in names]
    conf = mapio.read_manifest(kitchen_map)["config"]["landmarks"]
    a = landmarks.build(rec, names, desc, conf)
    b = landmarks.build(shuffled, names, desc, conf)
    assert np.array_equal(a.keep, b.keep) and np.array_equal(a.centers, b.centers)
