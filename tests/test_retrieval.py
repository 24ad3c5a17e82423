"""VLAD retrieval on real 7-Scenes RedKitchen frames (21 map images, 4 queries)."""

from pathlib import Path

import numpy as np
import pytest

from pramloc.config import load_config
from pramloc.errors import PramlocError
from pramloc.features import extract_path
from pramloc.io import read_image_list
from pramloc import retrieval
from pramloc.config import RetrievalConfig
from pramloc.retrieval import VladIndex, build_vocabulary, vlad

# Queries (interleaved split, frames i % 6 == 3) and the map frame 3 frames before them.
QUERIES = {"rgb/frame-000003.color.jpg": "rgb/frame-000000.color.jpg",
           "rgb/frame-000243.color.jpg": "rgb/frame-000240.color.jpg",
           "rgb/frame-000483.color.jpg": "rgb/frame-000480.color.jpg",
           "rgb/frame-000723.color.jpg": "rgb/frame-000720.color.jpg"}
MAP_STEP = 48  # frames between consecutive map images below


def frame_index(name: str) -> int:
    return int(Path(name).name.split("-")[1].split(".")[0])


@pytest.fixture(scope="module")
def feats(kitchen_root):
    db = read_image_list(kitchen_root / "splits" / "interleaved_db.txt")
    map_names = db[::MAP_STEP // 6]  # 21 map frames spread over the whole sequence
    assert set(QUERIES.values()) <= set(map_names)
    conf = load_config("indoor").features
    out = {n: extract_path(kitchen_root / n, conf)["descriptors"] for n in map_names + list(QUERIES)}
    return map_names, out


@pytest.fixture(scope="module")
def vocabulary(feats):
    map_names, desc = feats
    return build_vocabulary(np.concatenate([desc[n] for n in map_names]), 16, seed=0)


def test_vocabulary_is_deterministic(feats, vocabulary):
    map_names, desc = feats
    all_desc = np.concatenate([desc[n] for n in map_names])
    assert vocabulary.shape == (16, 128) and vocabulary.dtype == np.float32
    again = build_vocabulary(all_desc, 16, seed=0)
    np.testing.assert_array_equal(vocabulary, again)
    other = build_vocabulary(all_desc, 16, seed=1)
    assert not np.allclose(vocabulary, other)
    # Subsampling is seeded too.
    sub1 = build_vocabulary(all_desc, 8, seed=3, max_descriptors=5000)
    sub2 = build_vocabulary(all_desc, 8, seed=3, max_descriptors=5000)
    np.testing.assert_array_equal(sub1, sub2)
    with pytest.raises(PramlocError, match="too few"):
        build_vocabulary(all_desc[:5], 16)


def test_vlad_is_unit_norm_and_matches_definition(feats, vocabulary):
    map_names, desc = feats
    for n in map_names:
        v = vlad(desc[n], vocabulary)
        assert v.shape == (16 * 128,) and v.dtype == np.float32
        assert abs(np.linalg.norm(v) - 1) < 1e-5
    # Direct (loop) implementation of the definition on one image.
    d = desc[map_names[0]]
    assign = np.argmin(((d[:, None] - vocabulary[None]) ** 2).sum(-1), 1)
    res = np.zeros_like(vocabulary, dtype=np.float64)
    for x, k in zip(d, assign):
        res[k] += x - vocabulary[k]
    res /= np.maximum(np.linalg.norm(res, axis=1, keepdims=True), 1e-12)
    ref = np.sign(res.ravel()) * np.sqrt(np.abs(res.ravel()))
    np.testing.assert_allclose(vlad(d, vocabulary), ref / np.linalg.norm(ref), atol=1e-5)


def test_vlad_empty_and_bad_input(vocabulary):
    assert not vlad(np.zeros((0, 128), np.float32), vocabulary).any()
    assert vlad(np.zeros((0, 128)), vocabulary).shape == (16 * 128,)
    with pytest.raises(PramlocError, match="must be"):
        vlad(np.ones((10, 64), np.float32), vocabulary)


def test_query_retrieves_adjacent_frame(feats, vocabulary):
    map_names, desc = feats
    index = VladIndex.build(vocabulary, [desc[n] for n in map_names])
    for query, neighbour in QUERIES.items():
        idx, sc = index.search(index.describe(desc[query]), 3)
        ranked = [(map_names[i], float(s)) for i, s in zip(idx, sc)]
        names = [n for n, _ in ranked]
        assert neighbour in names, (query, ranked)
        # The best match is a temporal neighbour, not a frame from elsewhere in the sequence.
        assert abs(frame_index(names[0]) - frame_index(query)) <= MAP_STEP, (query, ranked)
        scores = [s for _, s in ranked]
        assert scores == sorted(scores, reverse=True)


def test_index_storage_and_round_trip(feats, vocabulary):
    map_names, desc = feats
    vlads = np.stack([vlad(desc[n], vocabulary) for n in map_names])
    queries = np.stack([vlad(desc[q], vocabulary) for q in QUERIES])
    exact = queries @ vlads.T
    m, dim = vlads.shape
    for storage, nbytes, tol in (("float16", m * dim * 2, 2e-3), ("int8", m * dim + 4 * m, 2e-2)):
        index = VladIndex(vocabulary, vlads, storage=storage)
        assert index.nbytes == nbytes
        idx, sc = index.search(queries, 3)  # batched
        assert idx.shape == sc.shape == (len(QUERIES), 3) and idx.dtype == np.int64
        np.testing.assert_allclose(sc, np.take_along_axis(exact, idx, 1), atol=tol)
        np.testing.assert_array_equal(idx[:, 0], exact.argmax(1))
        back = retrieval.from_arrays("vlad", index.to_arrays())
        assert isinstance(back, VladIndex) and len(back) == m and back.storage == storage
        i2, s2 = back.search(queries[0], 5)
        i1, s1 = index.search(queries[0], 5)
        np.testing.assert_array_equal(i1, i2)
        np.testing.assert_array_equal(s1, s2)
    index = VladIndex(vocabulary, vlads)
    idx, sc = index.search(queries[0], 100)  # k larger than the map
    assert len(idx) == m and sorted(idx.tolist()) == list(range(m))
    with pytest.raises(PramlocError, match="dimension"):
        index.search(np.ones(10, np.float32), 3)
    empty = VladIndex(vocabulary, np.zeros((0, dim), np.float32))
    idx, sc = empty.search(queries[0], 3)
    assert len(empty) == 0 and idx.shape == (0,) and sc.shape == (0,)


def test_registry_fit_matches_the_parts():
    """``retrieval.fit`` with the default config = vocabulary + VLAD vectors stored as int8
    (synthetic descriptors: no data needed); an unknown method is an error naming the
    known ones."""
    rng = np.random.default_rng(0)
    descs = [np.abs(rng.normal(size=(200, 128))).astype(np.float32) for _ in range(5)]
    conf = RetrievalConfig()
    index = retrieval.fit(conf, descs)
    vocab = build_vocabulary(np.concatenate(descs), conf.num_words, seed=conf.seed)
    direct = VladIndex.build(vocab, descs, storage="int8")
    for k, v in direct.to_arrays().items():
        np.testing.assert_array_equal(index.to_arrays()[k], v)
    assert retrieval.get("vlad") is VladIndex and VladIndex.method == "vlad" and len(index) == 5
    idx, _ = index.search(index.describe(descs[3]), 1)
    assert idx.tolist() == [3]
    with pytest.raises(PramlocError, match=r"known: .*\bvlad\b"):
        retrieval.get("netvlad")
