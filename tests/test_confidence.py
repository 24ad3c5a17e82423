"""The pose confidence (pramloc.confidence) on real localizations against a small real map."""

from __future__ import annotations

import dataclasses
import json

import cv2
import numpy as np
import pytest

from pramloc import confidence
from pramloc.confidence import FEATURES, ConfidenceModel, Evidence, features, shipped_model
from pramloc.datasets import load_dataset
from pramloc.evaluate import pose_errors
from pramloc.geometry import Pose
from pramloc.localize import Localizer
from pramloc.serve import answer

from .conftest import frame


@pytest.fixture(scope="module")
def kitchen(kitchen_map, kitchen_root):
    """A localizer on the small kitchen map and the 7-Scenes scene (ground truth)."""
    return Localizer(kitchen_map, mode="auto"), load_dataset("7scenes", kitchen_root)


def test_model_is_shipped_and_valid():
    model = shipped_model()
    assert model is not None, "pramloc/confidence_model.json missing: run bench/fit_confidence.py"
    assert model.features == FEATURES and 0.5 <= model.threshold < 1.0
    assert model.meta["training"] and "7scenes" in json.dumps(model.meta["training"])
    p = model.predict(np.stack([model.mean, model.mean + 3 * model.scale, model.mean - 3 * model.scale]))
    assert np.all((p >= 0) & (p <= 1))


def test_real_pose_has_confidence_in_record_and_summary(kitchen):
    loc, scene = kitchen
    im = scene[frame(15)]  # between the map frames 12 and 18
    r = loc.localize(scene.path(im.name), im.camera, im.name)
    t, R = pose_errors(r.pose, im.pose)
    assert t < 0.05 and R < 2.0
    assert 0.0 <= r.confidence <= 1.0 and isinstance(r.confident, bool)
    assert r.confident, (r.confidence, r.confidence_features)  # an accurate pose with hundreds of inliers
    rec = json.loads(r.lines()[1])
    assert rec["confidence"] == r.confidence and rec["confident"] is True
    assert set(rec["confidence_features"]) == set(FEATURES)
    assert f"confidence {r.confidence:.2f} (confident)" in r.summary()
    assert len(r.lines()[0].split()) == 8  # the results file keeps hloc's format
    ans = answer(r, "kitchen", None)  # the server's JSON answer is built from the log record
    assert ans["confidence"] == r.confidence and ans["confident"] is True
    assert r.times_ms["confidence"] < 50  # measured per query (< 1 ms on an idle core)


def test_failed_query_is_zero_and_not_confident(kitchen):
    loc, _ = kitchen
    r = loc.localize(np.full((480, 640), 127, np.uint8), None, "blank")
    assert r.pose is None
    assert r.confidence == 0.0 and r.confident is False
    rec = r.log_record()
    assert rec["confidence"] == 0.0 and rec["confident"] is False
    assert r.summary().startswith("failed:")


def test_other_scene_is_not_confident(kitchen, strecha_root):
    """A Strecha facade against the kitchen map: no pose, or one flagged not confident."""
    loc, _ = kitchen
    scene = load_dataset("strecha", strecha_root)
    for name in scene.names[:3]:
        image = cv2.imread(str(scene.path(name)), cv2.IMREAD_GRAYSCALE)
        small = cv2.resize(image, (768, 512), interpolation=cv2.INTER_AREA)
        r = loc.localize(small, scene[name].camera.scaled(0.25), name)
        assert not r.confident, (name, r.confidence, r.confidence_features)
        assert r.pose is not None or r.confidence == 0.0


def _scaled(pose: Pose | None, s: float) -> Pose | None:
    """The same camera in a map whose units are ``s`` times smaller (coordinates times s)."""
    return None if pose is None else Pose(pose.qvec, pose.tvec * s)


def test_features_do_not_depend_on_map_units(kitchen, monkeypatch):
    """The features of a real pose are the same when the map's coordinates are scaled."""
    loc, scene = kitchen
    seen: list[Evidence] = []
    real = confidence.features
    monkeypatch.setattr(confidence, "features", lambda ev: seen.append(ev) or real(ev))
    im = scene[frame(27)]
    r = loc.localize(scene.path(im.name), im.camera, im.name)
    assert r.pose is not None and len(seen) == 1
    ev = seen[0]
    x = real(ev)
    for s in (0.013, 7.5):
        ev_s = dataclasses.replace(ev, pose=_scaled(ev.pose, s), inlier_xyz=ev.inlier_xyz * s,
                                   first_pose=_scaled(ev.first_pose, s), other_pose=_scaled(ev.other_pose, s),
                                   candidates_xyz=ev.candidates_xyz * s)
        np.testing.assert_allclose(real(ev_s), x, rtol=1e-6, atol=1e-9)
    # And the pose's own evidence: inliers reproject within a few pixels, spread over the image.
    f = dict(zip(FEATURES, x))
    assert f["reprojection_px"] < 4 and f["coverage"] > 0.2 and f["hull"] > 0.2
    assert 0 < f["first_inlier_ratio"] <= 1 and 0 < f["visible_matched"] <= 1


def test_features_see_a_disagreement():
    """Two paths' poses 10 degrees apart, a refinement that moved the pose: the features say so."""
    rng = np.random.default_rng(0)
    xyz = rng.uniform([-1, -1, 3], [1, 1, 5], (200, 3))
    from pramloc.geometry import Camera

    cam = Camera.from_string("PINHOLE 640 480 525 525 320 240")
    pose = Pose.from_Rt(np.eye(3), np.zeros(3))
    uv = xyz[:, :2] / xyz[:, 2:] * 525 + np.array([320, 240]) - 0.5
    from scipy.spatial.transform import Rotation

    turned = Pose.from_Rt(Rotation.from_euler("y", 10, degrees=True).as_matrix(), np.zeros(3))
    base = Evidence(pose, cam, (640, 480), 1.0, uv, xyz, 250, "recognition")
    other = Evidence(pose, cam, (640, 480), 1.0, uv, xyz, 250, "recognition", first_pose=turned, other_pose=turned)
    f0, f1 = dict(zip(FEATURES, features(base))), dict(zip(FEATURES, features(other)))
    assert f0["reprojection_px"] < 1e-6 and f0["inlier_ratio"] == 0.8
    assert f0["paths_compared"] == 0 and f1["paths_compared"] == 1
    assert f1["paths_disagree"] == pytest.approx(np.log1p(10.0), abs=1e-6)
    assert f1["refine_rotation"] == pytest.approx(np.log1p(10.0), abs=1e-6)


def test_model_round_trip(tmp_path):
    model = ConfidenceModel(FEATURES, np.zeros(len(FEATURES)), np.ones(len(FEATURES)),
                            np.linspace(-1, 1, len(FEATURES)), 0.5, 0.9, {"note": "test"})
    path = tmp_path / "m.json"
    model.save(path)
    back = ConfidenceModel.from_dict(json.loads(path.read_text()))
    x = np.random.default_rng(1).normal(size=(5, len(FEATURES)))
    np.testing.assert_allclose(back.predict(x), model.predict(x))
    assert confidence.score(x[0], back) == (float(model.predict(x[0])[0]), bool(model.predict(x[0])[0] >= 0.9))
