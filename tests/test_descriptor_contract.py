"""The extractor contract: a signed descriptor declared by its extractor survives map
storage, the recognizer's augmentation and a whole map build unclipped (RootSIFT-only
code clipped it at 0), and an extractor that breaks its declaration is caught."""

from __future__ import annotations

import numpy as np
import pytest

from pramloc import features, mapio
from pramloc.errors import PramlocError
from pramloc.features import Extractor, EXTRACTORS
from pramloc.features.base import LEGACY_ROOTSIFT, DescriptorSpec, Features
from pramloc.recognition.data import TrainingImage, augmented_view

SIGNED = DescriptorSpec(dim=128, signed=True, norm="l2", storage="int8", scale=254.0)
ROTATION = np.linalg.qr(np.random.default_rng(0).standard_normal((128, 128)))[0].astype(np.float32)


def signed_sift(image, conf) -> Features:
    """RootSIFT turned by a fixed rotation: unit-norm, about half the components negative,
    and as matchable as RootSIFT (distances are kept)."""
    f = features.get_extractor("sift").extract(image, conf)
    return Features(f.keypoints, f.scores, f.descriptors @ ROTATION.T)


@pytest.fixture
def fake_signed(monkeypatch):
    monkeypatch.setitem(EXTRACTORS.items, "fake_signed", Extractor("fake_signed", SIGNED, signed_sift))
    return "fake_signed"


def unit_signed(n=200, d=128, seed=1):
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_storage_keeps_signed_descriptors():
    d = unit_signed()
    back = mapio.dequantize_descriptors(mapio.quantize_descriptors(d, SIGNED), SIGNED)
    assert (back < 0).mean() > 0.4
    assert np.abs(back - d).max() < 0.01
    # The RootSIFT storage clips every negative component: what the declaration prevents.
    old = LEGACY_ROOTSIFT.dequantize(LEGACY_ROOTSIFT.quantize(d))
    assert (old >= 0).all() and np.abs(old - d).max() > 0.1


def test_augmentation_keeps_signed_descriptors():
    d = unit_signed()
    im = TrainingImage("a", np.random.default_rng(2).uniform(0, 100, (len(d), 2)), d,
                       np.ones(len(d), np.int64), (100, 100))
    conf = {"scale": 0.0, "rotation": 0.0, "aspect": 0.0, "shift": 0.0, "jitter": 0.0,
            "descriptor_noise": 0.01, "min_keypoints": len(d), "max_keypoints": len(d)}
    for spec in (SIGNED, None):  # declared, and read off the data when not given
        v = augmented_view(im, np.random.default_rng(3), conf, spec=spec)
        assert (v.descriptors < 0).mean() > 0.4
        assert np.allclose(np.linalg.norm(v.descriptors, axis=1), 1, atol=1e-5)
    # An unsigned declaration clips (RootSIFT stays non-negative).
    v = augmented_view(im, np.random.default_rng(3), conf, spec=LEGACY_ROOTSIFT)
    assert (v.descriptors >= 0).all()


def test_signed_extractor_builds_a_map(fake_signed, kitchen_root, kitchen_split, tmp_path):
    from pramloc import build
    from pramloc.config import load_config
    from pramloc.datasets import load_dataset

    f = features.extract_path(kitchen_root / "rgb/frame-000000.color.jpg", {"name": fake_signed})
    assert f["descriptors"].shape[1] == 128 and (f["descriptors"] < 0).any()
    conf = load_config("indoor", [f"features.name={fake_signed}", "landmarks.num_landmarks=8",
                                  "landmarks.min_points_per_landmark=10", "triangulation.num_pairs=5"])
    out = tmp_path / "signed"
    manifest = build.main(conf, load_dataset("7scenes", kitchen_root, kitchen_split), out, train=False)
    assert manifest["descriptor"]["signed"] and manifest["feature"]["name"] == fake_signed
    m = mapio.load_map(out)
    assert m.descriptor_spec == SIGNED
    assert (m.descriptors < 0).mean() > 0.3  # stored signed, read back signed
    assert np.allclose(np.linalg.norm(m.descriptors, axis=1), 1, atol=1e-5)
    # Un-rotated, the stored descriptors are RootSIFT again (non-negative up to quantisation).
    assert (m.descriptors @ ROTATION).min() > -0.05


def test_extractor_breaking_its_declaration_is_caught(monkeypatch):
    def lying(image, conf):
        return Features(np.zeros((3, 2)), np.ones(3), -np.ones((3, 128)) / np.sqrt(128))

    monkeypatch.setitem(EXTRACTORS.items, "liar", Extractor("liar", LEGACY_ROOTSIFT, lying))
    with pytest.raises(PramlocError, match="negative values in descriptors declared unsigned"):
        features.extract_image(np.zeros((64, 64), np.uint8), {"name": "liar"})
    with pytest.raises(PramlocError, match="signed descriptors cannot be stored as uint8"):
        DescriptorSpec(dim=8, signed=True, storage="uint8")


def test_maps_without_a_declaration_read_as_rootsift(kitchen_map):
    import h5py

    with h5py.File(kitchen_map / "map.h5") as f:
        assert DescriptorSpec.from_json(f["points/descriptors"].attrs["spec"]) == features.descriptor_spec("sift")
    assert features.descriptor_spec(None) == LEGACY_ROOTSIFT == features.descriptor_spec("sift")
