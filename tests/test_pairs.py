"""Image pairs of map building (pramloc/pairs.py): by pose, by retrieval, sequential,
exhaustive, and the choice between them."""

from __future__ import annotations

import numpy as np
import pytest

from pramloc import pairs
from pramloc.errors import PramlocError


def test_exhaustive():
    names = [f"{i}.jpg" for i in range(7)]
    p = pairs.exhaustive(names)
    assert len(p) == 21 and len(set(p)) == 21 and all(names.index(a) < names.index(b) for a, b in p)


@pytest.mark.parametrize("names, order", [
    (["frame-000006.color.png", "frame-000000.color.png", "frame-000003.color.png"], [1, 2, 0]),
    (["P1180143.JPG", "P1180141.JPG", "P1180142.JPG", "P1180150.JPG"], [1, 2, 0, 3]),
    (["seq/img9.jpg", "seq/img10.jpg", "seq/img11.jpg"], [0, 1, 2]),  # numbers, not strings
])
def test_sequence_order(names, order):
    assert pairs.sequence_order(names).tolist() == order


@pytest.mark.parametrize("names", [
    ["a1.jpg", "b2.jpg", "a3.jpg"],          # two prefixes
    ["x.jpg", "y1.jpg", "y2.jpg"],           # a name without a number
    ["img1.jpg", "img01.jpg", "img2.jpg"],   # the same number twice
    ["a/1.jpg", "b/2.jpg", "a/3.jpg"],       # two folders
])
def test_not_a_sequence(names):
    assert pairs.sequence_order(names) is None and pairs.sequential(names, 3) == []


def test_sequential_window():
    names = [f"frame-{i:06d}.png" for i in range(0, 30, 3)][::-1]  # listed backwards
    p = pairs.sequential(names, 2)
    assert len(p) == 9 + 8
    num = {n: int(n[6:12]) for n in names}
    assert all(0 < abs(num[a] - num[b]) <= 6 for a, b in p)


def test_retrieval_pairs_are_each_images_top_k():
    """Each image is paired with exactly its k most similar others (by dot product), and the
    pair count stays between N k / 2 and N k: 1,000 images in well under a minute."""
    import time

    rng = np.random.default_rng(0)
    n, k = 1000, 20
    v = rng.normal(size=(n, 256)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    names = [f"{i:04d}.jpg" for i in range(n)]
    t = time.perf_counter()
    p = pairs.from_retrieval(names, v, k)
    assert time.perf_counter() - t < 60
    assert n * k / 2 <= len(p) <= n * k
    partners = {name: set() for name in names}
    for a, b in p:
        partners[a].add(b)
        partners[b].add(a)
    s = v @ v.T
    np.fill_diagonal(s, -np.inf)
    for i in (0, 17, 999):
        top = {names[j] for j in np.argsort(-s[i])[:k]}
        assert top <= partners[names[i]]


def test_select_chooses_exhaustive_only_where_it_is_no_more_pairs():
    rng = np.random.default_rng(1)

    def vectors(n):
        v = rng.normal(size=(n, 32)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    small = [f"{c}.jpg" for c in "abcdefghij"]  # 10 photos, 45 pairs: k=20 would pair them all
    p, rec = pairs.select(small, vectors(10), "auto", k=20, window=5)
    assert rec["method"] == "exhaustive" and len(p) == 45 == rec["pairs"]
    big = [f"IMG_{i:04d}.JPG" for i in range(200)]
    p, rec = pairs.select(big, vectors(200), "auto", k=10, window=3)
    assert rec["method"] == "retrieval+sequential" and rec["sequence"] and rec["sequential_window"] == 3
    assert len(p) == rec["pairs"] <= 200 * 13 < rec["exhaustive_pairs"]
    assert all((f"IMG_{i:04d}.JPG", f"IMG_{i + 1:04d}.JPG") in set(p) for i in range(199))
    p, rec = pairs.select(big, None, "exhaustive")
    assert len(p) == 19900 and rec["method"] == "exhaustive"
    with pytest.raises(PramlocError, match="triangulation.pairs"):
        pairs.select(big, None, "vocab-tree")


def test_from_poses_nearest_looking_the_same_way():
    """Three cameras in a row looking +z and one looking back: pairs are the nearest among
    those within the angle."""
    centers = np.array([[0, 0, 0], [1, 0, 0], [2, 0, 0], [0.5, 0, 0]], float)
    dirs = np.array([[0, 0, 1], [0, 0, 1], [0, 0, 1], [0, 0, -1]], float)
    p = pairs.from_poses(list("abcd"), centers, dirs, num_pairs=1, max_angle=60)
    assert p == [("a", "b"), ("b", "c")]
    assert pairs.from_poses(list("abcd"), centers, dirs, num_pairs=3, max_angle=60, max_distance=1.5) == \
        [("a", "b"), ("b", "c")]


def test_from_poses_of_some_images_only():
    """``sources``: the nearest of those images only (update-map: each new photo's), not the
    lists of the others that hold one of them."""
    centers = np.array([[0, 0, 0], [1, 0, 0], [2, 0, 0], [3, 0, 0], [4, 0, 0]], float)
    dirs = np.tile([0.0, 0.0, 1.0], (5, 1))
    names = list("abcde")
    assert pairs.from_poses(names, centers, dirs, num_pairs=1, sources=[4]) == [("d", "e")]
    assert pairs.from_poses(names, centers, dirs, num_pairs=2, sources=[2]) == [("b", "c"), ("c", "d")]
    # all images as sources: the same as no sources
    assert pairs.from_poses(names, centers, dirs, 2, sources=range(5)) == pairs.from_poses(names, centers, dirs, 2)
