"""Fuzzing the text parsers (and the COLMAP model reader) with hypothesis: whatever the
bytes, they return a value or raise :class:`PramlocError`, never anything else (and never
crash or hang the process, which pycolmap alone can do on a bad model).

Inputs are random text and bytes, and mutations of the real files of ../shared/data
(Strecha ``.camera`` files, 7-Scenes ``.pose.txt``, the Strecha COLMAP text model).
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pramloc.datasets.sevenscenes import read_matrix_pose
from pramloc.datasets.strecha import read_strecha_camera
from pramloc.errors import PramlocError
from pramloc.geometry import Camera, Pose
from pramloc.io import read_image_list, read_poses, read_query_list
from pramloc.io.colmap import read_colmap_model

from .conftest import KITCHEN, STRECHA, need_data

# A fixed, quick run in the test suite; PRAMLOC_FUZZ_EXAMPLES=5000 explores more (randomly).
_EXAMPLES = int(os.environ.get("PRAMLOC_FUZZ_EXAMPLES", "0"))
FUZZ = settings(max_examples=_EXAMPLES or 150, deadline=None, database=None, derandomize=not _EXAMPLES,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

# Tokens that parsers get wrong: non-finite, huge, tiny, out of integer range, Python-only
# number syntax ('1_0', Arabic-Indic digits), camera models, comments, odd whitespace.
TOKENS = ["0", "-0", "1", "-1", "2", "0.5", "nan", "NaN", "inf", "-inf", "1e308", "1e999", "1e-320", "-1e308",
          "4294967295", "4294967296", "-4294967297", "99999999999999999999", "9" * 5000, "1_0", "\u0661\u0662",
          "0x10", "+5", "5.", ".5", "1e", "PINHOLE", "SIMPLE_PINHOLE", "OPENCV", "FOV", "CAMERA", "IMU", "#", "",
          "a b", "\t", "\r", "\x00", "\x85", "\u2028", "\u00a0", "\xe9", "\ud800"]


def _seed(path: Path) -> str:
    return need_data(path).read_text()


@st.composite
def mutated(draw, seed: str):
    """``seed`` with a few token / line / character edits."""
    lines = seed.split("\n")
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.integers(0, 7))
        i = draw(st.integers(0, max(len(lines) - 1, 0))) if lines else 0
        if not lines:
            lines = [""]
        toks = lines[i].split(" ")
        j = draw(st.integers(0, max(len(toks) - 1, 0)))
        if op == 0:
            toks[j] = draw(st.sampled_from(TOKENS))
        elif op == 1:
            del toks[j]
        elif op == 2:
            toks.insert(j, draw(st.sampled_from(TOKENS)))
        elif op == 3:
            del lines[i]
            continue
        elif op == 4:
            lines.insert(i, lines[draw(st.integers(0, len(lines) - 1))])
            continue
        elif op == 5:
            text = "\n".join(lines)
            lines = text[: draw(st.integers(0, len(text)))].split("\n")
            continue
        elif op == 6:
            toks[j] = draw(st.text(max_size=8))
        else:
            toks = toks[: draw(st.integers(0, len(toks)))]
        lines[i] = " ".join(toks)
    return "\n".join(lines)


def anything(seed: str):
    """Mutated seeds, random text, random bytes."""
    return st.one_of(mutated(seed), st.text(max_size=300), st.binary(max_size=300))


@pytest.fixture(scope="module")
def scratch():
    with tempfile.TemporaryDirectory(prefix="pramloc-fuzz-") as d:
        yield Path(d)


def _write(path: Path, data) -> Path:
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_bytes(data.encode("utf-8", "surrogatepass"))  # lone surrogates: invalid UTF-8
    return path


def _only_pramloc_errors(fn, *args):
    try:
        return fn(*args)
    except PramlocError as err:
        msg = str(err)
        assert msg and "\n" not in msg
        return None


def _finite_pose(p: Pose) -> bool:
    return np.all(np.isfinite(p.qvec)) and np.all(np.isfinite(p.tvec)) and math.isclose(np.linalg.norm(p.qvec), 1)


STRECHA_CAMERA = STRECHA / "gt_cameras_strecha/0000.jpg.camera"
KITCHEN_POSE = KITCHEN / "poses/frame-000000.pose.txt"
POSES_SEED = ("rgb/frame-000000.color.jpg 0.93 -0.15 0.17 0.28 0.1 0.2 0.3\n"
              "my photo.jpg 1 0 0 0 -1.5 2 1e-3\n# comment\n\nimages/0001.jpg 0.5 0.5 0.5 0.5 0 0 0\n")
QUERIES_SEED = ("q1.jpg PINHOLE 640 480 525 525 320 240\nmy photo.jpg SIMPLE_RADIAL 3072 2048 2700 1536 1024 0.01\n"
                "bare.jpg\nimages/x.jpg OPENCV 100 100 90 90 50 50 0.1 0.01 0.001 0.001\n")


@FUZZ
@given(data=st.data())
def test_fuzz_read_poses(scratch, data):
    poses = _only_pramloc_errors(read_poses, _write(scratch / "poses.txt", data.draw(anything(POSES_SEED))))
    if poses is not None:
        assert all(isinstance(n, str) and n and _finite_pose(p) for n, p in poses.items())


@FUZZ
@given(data=st.data())
def test_fuzz_read_query_list(scratch, data):
    queries = _only_pramloc_errors(read_query_list, _write(scratch / "q.txt", data.draw(anything(QUERIES_SEED))))
    if queries is not None:
        for name, cam in queries.items():
            assert name and (cam is None or (cam.width > 0 and np.all(np.isfinite(cam.params))))


@FUZZ
@given(data=st.data())
def test_fuzz_read_image_list(scratch, data):
    seed = "rgb/frame-000000.color.jpg\nmy photo.jpg\n# comment\n\nimages/0001.jpg\n"
    names = _only_pramloc_errors(read_image_list, _write(scratch / "list.txt", data.draw(anything(seed))))
    if names is not None:
        assert len(set(names)) == len(names) and all(n == n.strip() and n for n in names)


@FUZZ
@given(data=st.data())
def test_fuzz_read_strecha_camera(scratch, data):
    text = data.draw(anything(_seed(STRECHA_CAMERA)))
    out = _only_pramloc_errors(read_strecha_camera, _write(scratch / "x.camera", text))
    if out is not None:
        cam, pose = out
        assert cam.width > 0 and cam.height > 0 and _finite_pose(pose)
        assert np.isclose(np.linalg.det(pose.R), 1)


@FUZZ
@given(data=st.data())
def test_fuzz_read_matrix_pose(scratch, data):
    pose = _only_pramloc_errors(read_matrix_pose, _write(scratch / "x.pose.txt", data.draw(anything(_seed(KITCHEN_POSE)))))
    if pose is not None:
        assert _finite_pose(pose)


@FUZZ
@given(text=st.one_of(mutated("PINHOLE 640 480 525 525 320 240"), mutated("SIMPLE_RADIAL 3072 2048 2700 1536 1024 0.01"),
                      st.text(max_size=100)))
def test_fuzz_camera_from_string(text):
    cam = _only_pramloc_errors(Camera.from_string, text)
    if cam is not None:
        assert 0 < cam.width and 0 < cam.height and np.all(np.isfinite(cam.params))
        assert np.all(np.isfinite(cam.K()))


@pytest.fixture(scope="module")
def colmap_seed():
    model = need_data(STRECHA / "gt_colmap_text")
    files = {p: (model / p).read_text() for p in ("cameras.txt", "images.txt", "points3D.txt")}
    # Give the seed 2D points and 3D points with tracks, so that mutations reach them.
    files["images.txt"] = (files["images.txt"].replace("0000.jpg\n\n", "0000.jpg\n100 200 1 300.5 400 -1\n", 1)
                           .replace("0001.jpg\n\n", "0001.jpg\n110 210 1\n", 1))
    files["points3D.txt"] = "1 0.1 0.2 3.0 10 20 30 0.5 1 0 2 0\n2 1 1 1 0 0 0 0.1\n"
    return files


@FUZZ
@given(data=st.data())
def test_fuzz_colmap_text_model(scratch, colmap_seed, data):
    """pycolmap itself raises ValueError/IndexError/RuntimeError on many of these and
    accepts others wrongly (see pramloc.io.colmap); read_colmap_model raises only
    PramlocError and what it returns is usable."""
    model = scratch / "model"
    shutil.rmtree(model, ignore_errors=True)
    model.mkdir()
    parts = data.draw(st.sets(st.sampled_from(sorted(colmap_seed)), min_size=1, max_size=3))
    for name, text in colmap_seed.items():
        _write(model / name, data.draw(anything(text)) if name in parts else text)
    rec = _only_pramloc_errors(read_colmap_model, model)
    if rec is not None:
        names = [im.name for im in rec.images.values()]
        assert len(set(names)) == len(names)
        for im in rec.images.values():
            assert im.camera_id in rec.cameras
            if im.has_pose:
                assert _finite_pose(Pose.from_pycolmap(im.cam_from_world()))


@pytest.fixture(scope="module")
def colmap_binary(scratch):
    import pycolmap

    model = need_data(STRECHA / "gt_colmap_text")
    out = scratch / "binary-seed"
    out.mkdir()
    pycolmap.Reconstruction(str(model)).write_binary(str(out))
    return {p.name: p.read_bytes() for p in out.iterdir()}


@settings(FUZZ, max_examples=_EXAMPLES or 100)
@given(data=st.data())
def test_fuzz_colmap_binary_model(scratch, colmap_binary, data):
    """Truncated and bit-flipped binary models: pycolmap alone loops forever on most
    truncations; the structural check turns them into PramlocError first."""
    model = scratch / "binary"
    shutil.rmtree(model, ignore_errors=True)
    model.mkdir()
    part = data.draw(st.sampled_from(sorted(colmap_binary)))
    for name, blob in colmap_binary.items():
        if name == part:
            blob = bytearray(blob)
            if data.draw(st.booleans()):
                blob = blob[: data.draw(st.integers(0, len(blob)))]
            else:
                for _ in range(data.draw(st.integers(1, 4))):
                    if blob:
                        blob[data.draw(st.integers(0, len(blob) - 1))] = data.draw(st.integers(0, 255))
            blob = bytes(blob)
        (model / name).write_bytes(blob)
    rec = _only_pramloc_errors(read_colmap_model, model)
    if rec is not None:
        for im in rec.images.values():
            if im.has_pose:
                assert _finite_pose(Pose.from_pycolmap(im.cam_from_world()))
