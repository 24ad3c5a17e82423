"""Global descriptors over a dense backbone (AnyLoc, GeM; pramloc/retrieval/) on real
7-Scenes RedKitchen frames, and a map built and localized with one."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pramloc import retrieval
from pramloc.config import RetrievalConfig, load_config
from pramloc.datasets import load_dataset
from pramloc.errors import PramlocError
from pramloc.evaluate import pose_errors
from pramloc.features import read_image
from pramloc.localize import Localizer
from pramloc.retrieval import RetrievalInput
from pramloc.retrieval.backbones import dense_features

from .conftest import frame

MAP_FRAMES = list(range(0, 1000, 60))  # 17 frames over the whole sequence
QUERY_FRAMES = (3, 243, 483, 723)      # each 3 frames after a map frame
SMALL = {"max_side": 320, "dense_words": 8}  # small images and vocabulary: seconds


@pytest.fixture(scope="module")
def items(kitchen_root):
    return ([RetrievalInput(image=kitchen_root / frame(i), name=frame(i)) for i in MAP_FRAMES],
            [RetrievalInput(image=kitchen_root / frame(i), name=frame(i)) for i in QUERY_FRAMES])


@pytest.mark.parametrize("backbone, grid", [("xfeat", (28, 40, 64)), ("disk", (30, 40, 128))])
def test_dense_features_are_unit_vectors_at_stride_8(kitchen_root, backbone, grid):
    """320x240 at stride 8; XFeat's sides are rounded down to multiples of 32 (224), DISK's of 16."""
    conf = RetrievalConfig(backbone=backbone, max_side=320)
    item = RetrievalInput(image=kitchen_root / frame(0))
    f = dense_features(item, conf)
    assert f.shape == grid and f.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(f, axis=-1), 1.0, atol=2e-3)
    # From the array as from the file, and remembered with the input.
    again = dense_features(RetrievalInput(image=read_image(kitchen_root / frame(0))), conf)
    np.testing.assert_allclose(again, f, atol=2e-3)
    assert item.memo["size"] == (640, 480) and sum(k.startswith("dense:") for k in item.memo) == 1
    assert np.array_equal(dense_features(item, conf), f)


@pytest.mark.parametrize("method", ["anyloc", "gem"])
def test_queries_retrieve_their_neighbour_and_round_trip(items, method):
    map_items, queries = items
    conf = RetrievalConfig(method=method, **SMALL)
    index = retrieval.fit(conf, map_items)
    assert len(index) == len(MAP_FRAMES) and index.needs == ("image",)
    for q, i in zip(queries, QUERY_FRAMES):
        v = index.describe(q)
        assert abs(np.linalg.norm(v) - 1) < 1e-5
        idx, sc = index.search(v, 3)
        assert MAP_FRAMES[idx[0]] == i - 3, (method, i, [MAP_FRAMES[j] for j in idx])
        assert list(sc) == sorted(sc, reverse=True)
    # Stored and read back (settings included): the same vectors and answers.
    back = retrieval.from_arrays(method, index.to_arrays())
    np.testing.assert_array_equal(back.vectors, index.vectors)
    assert back.settings.max_side == 320 and back.settings.backbone == "xfeat"
    np.testing.assert_array_equal(back.describe(queries[0]), index.describe(queries[0]))
    sub = index.subset([4, 0])
    np.testing.assert_array_equal(sub.vectors, index.vectors[[4, 0]])


def test_anyloc_vocabulary_and_pca(items):
    map_items, queries = items
    conf = RetrievalConfig(method="anyloc", dim=8, **SMALL)
    index = retrieval.fit(conf, map_items)
    assert index.vocabulary.shape == (8, 64) and index.projection.shape == (8, 8 * 64)
    assert index.vectors.shape == (len(MAP_FRAMES), 8) and index.nbytes == len(MAP_FRAMES) * 8 * 2
    # Whitened: the map images' projected vectors have unit variance per component.
    raw = np.stack([index.aggregate(dense_features(i, index.settings), i) for i in map_items])
    proj = (raw - index.mean) @ index.projection.T
    np.testing.assert_allclose(proj.var(0, ddof=1), 1.0, rtol=1e-3)
    # At most M - 1 components.
    assert retrieval.fit(RetrievalConfig(method="anyloc", dim=500, **SMALL), map_items[:5]).vectors.shape[1] == 4


def test_dense_method_needs_the_image():
    index_conf = RetrievalConfig(method="gem")
    with pytest.raises(PramlocError, match="needs the image's image"):
        retrieval.fit(index_conf, [np.zeros((5, 128), np.float32)])
    with pytest.raises(PramlocError, match="unknown retrieval.backbone 'vgg'"):
        retrieval.fit(RetrievalConfig(method="gem", backbone="vgg"), [RetrievalInput(image=np.zeros((64, 64), np.uint8))])


def test_map_built_and_localized_with_anyloc(tmp_path, kitchen_root, kitchen_split):
    """build-map with ``retrieval.method=anyloc`` stores the index and its settings; the
    retrieval path of ``localize`` describes the query image with them."""
    from pramloc import build
    from pramloc.mapio import load_map, retrieval_index

    conf = load_config("indoor", ["landmarks.num_landmarks=8", "landmarks.min_points_per_landmark=10",
                                     "triangulation.num_pairs=5", "retrieval.method=anyloc",
                                     "retrieval.max_side=320", "retrieval.dense_words=4"])
    out = tmp_path / "map"
    build.main(conf, load_dataset("7scenes", kitchen_root, kitchen_split), out, train=False)
    assert json.loads((out / "manifest.json").read_text())["retrieval"] == {"method": "anyloc"}
    index = retrieval_index(load_map(out))
    assert type(index).__name__ == "AnyLocIndex" and len(index) == 8
    scene = load_dataset("7scenes", kitchen_root)
    loc = Localizer(out, mode="retrieval")
    for i in (15, 27):
        im = scene[frame(i)]
        r = loc.localize(scene.path(im.name), im.camera, im.name)
        assert r.path == "retrieval", r.reason
        assert frame(i - 3) in r.retrieved[:2]
        t, R = pose_errors(r.pose, im.pose)
        assert t < 0.05 and R < 2.0
