"""Which image pairs are matched when a map is built.

- :func:`from_poses`: known poses (triangulation): each image with its nearest map images
  by camera centre among those looking the same way.
- Images alone (structure-from-motion), :func:`select`: each image with its ``k`` most
  similar images by the map's own global descriptor (:mod:`pramloc.retrieval`, fitted
  before SfM) (:func:`from_retrieval`), plus its ``window`` successors when the file names
  number a sequence (video frames, photos of a walk) (:func:`sequential`); all pairs
  (:func:`exhaustive`) where that is no more pairs than the selection. The number of pairs
  grows as N x (k + window) instead of N^2 / 2.

Pairs are unordered, unique and sorted by image order: ``(names[i], names[j])`` with i < j.
"""

from __future__ import annotations

import re
from typing import Sequence

import numpy as np

from .errors import PramlocError

Pair = tuple[str, str]

PAIR_METHODS = ("auto", "exhaustive", "retrieval")


def exhaustive(names: Sequence[str]) -> list[Pair]:
    """Every pair: N (N - 1) / 2."""
    return [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]


def _unique(names: Sequence[str], index_pairs) -> list[Pair]:
    pairs = {(min(i, j), max(i, j)) for i, j in index_pairs if i != j}
    return [(names[i], names[j]) for i, j in sorted(pairs)]


def from_poses(names: Sequence[str], centers: np.ndarray, directions: np.ndarray, num_pairs: int,
               max_distance: float | None = None, max_angle: float = 90.0,
               sources: Sequence[int] | None = None) -> list[Pair]:
    """For each image (or each of the indices ``sources``), its ``num_pairs`` nearest images
    by camera centre (``centers`` (N, 3)) among those whose viewing directions
    (``directions`` (N, 3), unit, world frame) differ by at most ``max_angle`` degrees and
    whose centres are within ``max_distance`` (if given)."""
    rows = np.arange(len(names)) if sources is None else np.asarray(sources, dtype=int)
    dist = np.linalg.norm(centers[rows, None] - centers[None], axis=-1)  # (S, N)
    valid = np.clip(directions[rows] @ directions.T, -1, 1) >= np.cos(np.deg2rad(max_angle))
    if max_distance is not None:
        valid &= dist <= max_distance
    valid[np.arange(len(rows)), rows] = False
    dist = np.where(valid, dist, np.inf)
    order = np.argsort(dist, axis=1, kind="stable")[:, :num_pairs]
    return _unique(names, ((int(i), int(j)) for r, i in enumerate(rows) for j in order[r] if np.isfinite(dist[r, j])))


_NUMBER = re.compile(r"(\d+)(?!.*\d)")  # the last run of digits of a name


def sequence_order(names: Sequence[str]) -> np.ndarray | None:
    """Indices of ``names`` in sequence order when the names number a sequence (one
    folder, one prefix and suffix around the last number of the file name, all numbers
    distinct: ``frame-000123.color.png``, ``P1180141.JPG``), else None."""
    if len(names) < 3:
        return None
    keys, numbers = set(), []
    for n in names:
        m = _NUMBER.search(n)
        if m is None:
            return None
        keys.add((n[:m.start()], n[m.end():]))
        numbers.append(int(m.group(1)))
    if len(keys) != 1 or len(set(numbers)) != len(numbers):
        return None
    return np.argsort(numbers, kind="stable")


def sequential(names: Sequence[str], window: int) -> list[Pair]:
    """Each image with its ``window`` successors in sequence order (:func:`sequence_order`);
    none when the names do not number a sequence."""
    order = sequence_order(names)
    if order is None or window < 1:
        return []
    return _unique(names, ((int(order[i]), int(order[j])) for i in range(len(order))
                           for j in range(i + 1, min(i + 1 + window, len(order)))))


def from_retrieval(names: Sequence[str], vectors: np.ndarray, k: int) -> list[Pair]:
    """Each image with its ``k`` most similar other images: ``vectors`` (N, G) are the
    images' global descriptors compared by dot product (unit vectors: cosine)."""
    vectors = np.asarray(vectors, np.float32)
    if vectors.ndim != 2 or len(vectors) != len(names):
        raise PramlocError(f"pairs: need one global vector per image ({len(names)}), got shape {vectors.shape}")
    k = max(0, min(int(k), len(names) - 1))
    if k == 0:
        return []
    index_pairs = []
    for start in range(0, len(names), 1024):  # blocks of rows: N x N scores are never held at once
        s = vectors[start:start + 1024] @ vectors.T
        rows = np.arange(start, start + len(s))
        s[rows - start, rows] = -np.inf
        top = np.argpartition(-s, k - 1, axis=1)[:, :k]
        index_pairs += [(int(i), int(j)) for i, row in zip(rows, top) for j in row]
    return _unique(names, index_pairs)


def select(names: Sequence[str], vectors: np.ndarray | None, method: str = "auto", k: int = 20,
           window: int = 5) -> tuple[list[Pair], dict]:
    """The pairs of structure-from-motion from images alone, and a record of the choice
    (for the manifest): ``exhaustive``; ``retrieval``: :func:`from_retrieval` (``k``) plus
    :func:`sequential` (``window``); ``auto``: retrieval, unless exhaustive has no more pairs.
    ``vectors`` (N, G): the images' global descriptors (needed unless exhaustive)."""
    if method not in PAIR_METHODS:
        raise PramlocError(f"unknown triangulation.pairs {method!r} (known: {', '.join(PAIR_METHODS)})")
    n = len(names)
    all_pairs = n * (n - 1) // 2
    record = {"images": n, "exhaustive_pairs": all_pairs}
    if method == "exhaustive":
        return exhaustive(names), {**record, "method": "exhaustive", "pairs": all_pairs}
    if vectors is None:
        raise PramlocError("pairs: retrieval pairs need the images' global descriptors")
    seq = sequential(names, window)
    pairs = sorted(set(from_retrieval(names, vectors, k)) | set(seq), key=_order_key(names))
    record |= {"retrieval_k": int(k), "sequence": sequence_order(names) is not None,
               "sequential_window": int(window) if seq else 0}
    if method == "auto" and len(pairs) >= all_pairs:
        return exhaustive(names), {**record, "method": "exhaustive", "pairs": all_pairs,
                                   "why": f"{n} images: exhaustive is no more pairs than k={k} retrieval"}
    return pairs, {**record, "method": "retrieval" + ("+sequential" if seq else ""), "pairs": len(pairs)}


def _order_key(names: Sequence[str]):
    pos = {n: i for i, n in enumerate(names)}
    return lambda p: (pos[p[0]], pos[p[1]])


def for_sfm(names: Sequence[str], items: Sequence, conf, retrieval_conf):
    """The pairs of structure-from-motion from images alone, as ``build-map`` chooses them:
    the map's retrieval (``retrieval_conf``, :mod:`pramloc.retrieval`) fitted on every
    image (a :class:`~pramloc.retrieval.RetrievalInput`, or its local descriptors (N_i, D)),
    each image described, then :func:`select` with the
    :class:`~pramloc.config.TriangulationConfig` ``conf`` (``pairs``, ``retrieval_pairs``,
    ``sequential_pairs``). Returns the fitted index (the map keeps it), the pairs and the
    record of the choice. A method that needs the map's observations (``landmark-vlad``:
    landmarks; ``supervlad``: co-visibility) cannot be fitted before structure-from-motion:
    the pairs then come from ``anyloc`` with the same backbone, and the index returned is
    None (``build-map`` fits the map's method once the map exists)."""
    import dataclasses

    from . import retrieval

    items = [retrieval.as_input(i) for i in items]
    before_sfm = not {"labels", "points"} & set(retrieval.get(retrieval_conf.method).needs)
    pairs_conf = retrieval_conf if before_sfm else dataclasses.replace(retrieval_conf, method="anyloc")
    index = retrieval.fit(pairs_conf, items)
    vectors = None if conf.pairs == "exhaustive" else np.stack([index.describe(i) for i in items])
    pairs, record = select(names, vectors, conf.pairs, conf.retrieval_pairs, conf.sequential_pairs)
    if not before_sfm:
        record["retrieval_method"] = pairs_conf.method
    return (index if before_sfm else None), pairs, record
