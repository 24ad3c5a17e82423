"""The retrieval methods that read the map's observations: SuperVLAD (trained on the
map images' co-visibility) and landmark VLAD (one VLAD per landmark region), on the small
real 7-Scenes maps of conftest."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from pramloc import retrieval
from pramloc.config import RetrievalConfig
from pramloc.datasets import load_dataset
from pramloc.errors import PramlocError
from pramloc.evaluate import pose_errors
from pramloc.localize import Localizer
from pramloc.mapio import load_map
from pramloc.retrieval import RetrievalInput, map_inputs
from pramloc.retrieval.landmark_vlad import regions
from pramloc.retrieval.supervlad import covisibility

from .conftest import frame

SMALL = {"max_side": 320, "dense_words": 8}


def inputs(map_dir, root):
    m = load_map(map_dir)
    return m, map_inputs(m, [RetrievalInput(image=root / n, name=n) for n in m.image_names])


def test_map_inputs_carry_the_observations(kitchen_map, kitchen_root):
    m, items = inputs(kitchen_map, kitchen_root)
    assert len(items) == len(m.image_names) == 8
    for i, it in enumerate(items):
        np.testing.assert_array_equal(it.points, m.image_point_ids(i))
        np.testing.assert_array_equal(it.labels, np.asarray(m.point_landmark)[it.points] + 1)
        assert it.keypoints.shape == (len(it.points), 2) and it.labels.min() >= 1


def test_covisibility_of_the_map_images(kitchen_map, kitchen_root):
    _, items = inputs(kitchen_map, kitchen_root)
    c = covisibility([it.points for it in items])
    assert c.shape == (8, 8) and np.allclose(np.diag(c), 1) and np.allclose(c, c.T)
    # Frames 6 apart share more of their points than frames 42 apart.
    assert c[0, 1] > 0.3 and c[0, 1] > c[0, 7]


def test_supervlad_trains_and_retrieves(kitchen_map, kitchen_root):
    _, items = inputs(kitchen_map, kitchen_root)
    # A second place: frames 600..642 (the other side of the kitchen), co-visible among
    # themselves as the first 8 are and with none of them (their point ids moved apart).
    items += [RetrievalInput(image=kitchen_root / frame(600 + 6 * i), points=it.points + 10**6)
              for i, it in enumerate(items)]
    conf = RetrievalConfig(method="supervlad", train_steps=20, **SMALL)
    index = retrieval.fit(conf, items)
    untrained = retrieval.fit(dataclasses.replace(conf, train_steps=0), items)
    assert index.vectors.shape == (16, 4 * 64) and index.nbytes == 16 * 4 * 64 * 2
    assert not np.allclose(index.head.assign.weight.detach(), untrained.head.assign.weight.detach())
    for q in (3, 21, 39, 603, 621, 639):  # each query between two map frames
        idx, _ = index.search(index.describe(RetrievalInput(image=kitchen_root / frame(q))), 2)
        near = (q % 600) // 6 + (8 if q >= 600 else 0)
        assert near in idx or near + 1 in idx, (q, idx)
    back = retrieval.from_arrays("supervlad", index.to_arrays())
    np.testing.assert_array_equal(back.describe(items[2]), index.describe(items[2]))
    with pytest.raises(PramlocError, match="needs the image's points"):
        retrieval.fit(conf, [RetrievalInput(image=kitchen_root / frame(0))] * 2)


def test_landmark_regions():
    feats = np.zeros((30, 40, 4), np.float32)
    kps = np.array([[100, 100]] * 5 + [[600, 400]] * 4, np.float32)  # landmark 1: 5 keypoints, 2: only 4
    masks = regions(feats, kps, np.array([2] * 5 + [3] * 4), (640, 480))
    assert len(masks) == 2 and masks[0].all()  # the whole image, and landmark 1's region
    ys, xs = np.nonzero(masks[1])
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (4, 8, 4, 8)  # cell (6, 6) grown by 2


def test_landmark_vlad_in_localize(kitchen_map_trained, kitchen_root):
    """Fitted on the map's observations, described from the recognizer's labels of the query:
    the retrieval path of ``localize`` with ``landmark-vlad`` as the map's method."""
    m, items = inputs(kitchen_map_trained, kitchen_root)
    index = retrieval.fit(RetrievalConfig(method="landmark-vlad", region_dim=16, **SMALL), items)
    assert len(index) == 8 and len(index.vectors) > 8 and index.vectors.shape[1] == 16  # whole images + landmarks
    m.retrieval, m.manifest = index.to_arrays(), {**m.manifest, "retrieval": {"method": "landmark-vlad"}}
    loc = Localizer(m, mode="retrieval")
    assert loc.recognizer is None and loc._labeler is not None
    scene = load_dataset("7scenes", kitchen_root)
    for i in (15, 27):
        im = scene[frame(i)]
        r = loc.localize(scene.path(im.name), im.camera, im.name)
        assert r.path == "retrieval", r.reason
        assert {frame(i - 3), frame(i + 3)} & set(r.retrieved[:2]), r.retrieved
        assert pose_errors(r.pose, im.pose)[0] < 0.05
    with pytest.raises(PramlocError, match="needs the image's labels"):
        index.describe(RetrievalInput(image=kitchen_root / frame(3)))
    # auto, both paths run: the recognition path's labels serve the retrieval path (one recognizer pass).
    auto = Localizer(m, mode="auto", conf={"confident_inliers": 10 ** 6})
    assert auto.recognizer is auto._labeler
    calls, recognize = [], auto._labeler.recognize
    auto._labeler.recognize = lambda *a, **k: calls.append(1) or recognize(*a, **k)
    im = scene[frame(15)]
    r = auto.localize(scene.path(im.name), im.camera, im.name)
    assert set(r.notes) == {"recognition", "retrieval"} and r.retrieved and len(calls) == 1


def test_sfm_pairs_of_a_method_that_needs_the_map(kitchen_root):
    """Before structure-from-motion there are no observations: supervlad's pairs come from
    anyloc on the same backbone, and no index is returned (build-map fits it on the map)."""
    from pramloc import pairs
    from pramloc.config import TriangulationConfig

    names = [frame(i) for i in range(0, 48, 6)]
    items = [RetrievalInput(image=kitchen_root / n, name=n) for n in names]
    index, p, record = pairs.for_sfm(names, items, TriangulationConfig(pairs="retrieval", retrieval_pairs=2),
                                     RetrievalConfig(method="supervlad", **SMALL))
    assert index is None and record["retrieval_method"] == "anyloc" and record["method"].startswith("retrieval")
    assert (names[0], names[1]) in p  # neighbouring frames are paired
