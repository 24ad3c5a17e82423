"""Landmark segmentation and the points stored in the map, on the small real 7-Scenes map's
triangulated model."""

from __future__ import annotations

import numpy as np
import pycolmap
import pytest

from pramloc import landmarks
from pramloc.build import cache_dir
from pramloc.config import load_config
from pramloc.io import list_feature_names, read_features


@pytest.fixture(scope="module")
def model(kitchen_map):
    """The full triangulated model and the features of the small map (from its build cache)."""
    cache = cache_dir(kitchen_map)
    rec = pycolmap.Reconstruction(str(next(p for p in cache.glob("sfm-*") if p.is_dir())))
    feats_path = next(cache.glob("features-*.h5"))
    names = sorted(list_feature_names(feats_path))
    return rec, names, [read_features(feats_path, n)["descriptors"] for n in names]


def _conf(**kw):
    conf = load_config("indoor", ["landmarks.num_landmarks=8", "landmarks.min_points_per_landmark=10"]).landmarks
    return {**conf.to_dict(), **kw}


def test_every_well_observed_point_is_stored(model):
    rec, names, descs = model
    seg = landmarks.build(rec, names, descs, _conf())
    tl = seg.tracks.track_length
    # points_per_image null: every inlier point seen by min_track_length images is stored.
    assert np.array_equal(seg.keep, tl >= 3) and seg.keep.sum() > 0
    assert len(seg.descriptors) == seg.keep.sum()
    capped = landmarks.build(rec, names, descs, _conf(points_per_image=20))
    assert capped.keep.sum() < seg.keep.sum() and not np.any(capped.keep & ~seg.keep)
    # The landmarks come from each image's best-observed points only: the same whatever is stored.
    assert np.allclose(capped.centers, seg.centers) and np.array_equal(capped.landmark, seg.landmark)
    # Every landmark owns stored points.
    assert np.all(np.bincount(seg.landmark[seg.keep], minlength=len(seg.centers)) > 0)
