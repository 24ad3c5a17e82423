"""Nearest-neighbour descriptor matching (kornia), for 2D-2D and 2D-3D correspondences.

Distances are Euclidean, for any real-valued descriptors. The kornia matcher
is chosen by the two options:

============  =========  ==========================================================
``mutual``    ``ratio``  kornia function
============  =========  ==========================================================
True          None       ``match_mnn``: mutual nearest neighbours
True          r          ``match_smnn``: mutual, ratio test ``d1 / d2 <= r`` both ways
False         r          ``match_snn``: ratio test from query to database
False         None       ``match_nn``: every query descriptor's nearest neighbour
============  =========  ==========================================================

The ratio tests need a second neighbour: with ``ratio`` set, a side with fewer than two
descriptors gives no matches (kornia's convention), as does an empty input. The mutual
options run kornia's one-way matcher forward, then backward only from the database
descriptors that are some query descriptor's nearest neighbour (:func:`_mutual`): the
matches of ``match_mnn`` / ``match_smnn`` at a fraction of the backward pass. The matchers
run on squared distances, with the squared ratio (``d1 / d2 <= r`` is ``d1^2 / d2^2 <= r^2``):
the square root is taken of the matches' distances only, not of the whole matrix.
"""

from __future__ import annotations

import threading

import kornia.feature as KF
import torch

from .errors import PramlocError

_WORKSPACE = threading.local()  # per thread: the CPU buffer of the distance matrix (see _squared_distances)


def _as_tensor(desc, device: torch.device | str | None) -> torch.Tensor:
    t = torch.as_tensor(desc) if not isinstance(desc, torch.Tensor) else desc
    if device is not None:
        t = t.to(device)
    return t.float()


def _squared_distances(q: torch.Tensor, db: torch.Tensor) -> torch.Tensor:
    """(N, M) squared Euclidean distances between (N, D) and (M, D), as ``torch.cdist``
    computes them before its square root (``max(|q|^2 + |db|^2 - 2 q.db, 0)``). On the CPU
    the matrix is written into a buffer kept per thread and reused by the next call (it
    holds the largest matrix matched so far, e.g. 40 MB for 1024 x 10k): a fresh matrix
    above the allocator's mmap threshold (32 MB with glibc) page-faults on every call, which
    cost as much as the product itself (1024 x 10k x 64: 31 ms per match, 21 ms reused).
    Without the square root over the whole matrix, 4096 x 8000 x 128 (outdoor photos) takes
    73 instead of 98 ms, 768 x 2048 x 128 (a 7-Scenes query) 2.5 instead of 3.2 ms. On the
    CPU the result is valid until the thread's next call."""
    shape = (len(q), len(db))
    if q.device.type == "cpu":
        n = shape[0] * shape[1]
        buf = getattr(_WORKSPACE, "buf", None)
        if buf is None or buf.numel() < n:
            buf = _WORKSPACE.buf = torch.empty(n)
        dm = buf[:n].view(shape)
    else:
        dm = torch.empty(shape, device=q.device)
    torch.addmm(db.square().sum(1)[None].expand(shape[0], -1), q, db.T, alpha=-2.0, out=dm)
    return dm.add_(q.square().sum(1, keepdim=True)).clamp_min_(0.0)


def _mutual(q: torch.Tensor, db: torch.Tensor, dm: torch.Tensor, ratio: float | None) -> torch.Tensor:
    """kornia's ``match_smnn`` (``ratio``) or ``match_mnn`` (None) on the (N, M) distances
    ``dm`` (or squared distances with a squared ``ratio``): (K, 2) rows (query index,
    database index), sorted by query index. A mutual
    match's database side is its query's nearest neighbour, so the backward pass (each
    database descriptor's nearest query, with its own ratio test) runs on those <= N
    columns only instead of all M (block split, 1024 x 7,300: about 6 ms less per query).
    Ties between exactly equal distances fail any ratio test below 1; for ``match_mnn``
    both take the first minimum."""
    forward = KF.match_nn(q, db, dm=dm)[1] if ratio is None else KF.match_snn(q, db, th=ratio, dm=dm)[1]
    if len(forward) == 0:
        return forward.reshape(0, 2)
    cols, col_of = torch.unique(forward[:, 1], return_inverse=True)
    sub = dm.index_select(1, cols).t()  # (C, N): the candidate columns' distances to every query
    backward = (KF.match_nn(db[cols], q, dm=sub)[1] if ratio is None
                else KF.match_snn(db[cols], q, th=ratio, dm=sub)[1])  # rows (candidate, query)
    nearest = torch.full((len(cols),), -1, dtype=torch.long, device=dm.device)
    nearest[backward[:, 0].long()] = backward[:, 1].long()
    return forward[nearest[col_of] == forward[:, 0]]


@torch.no_grad()
def match(desc_q, desc_db, ratio: float | None = 0.9, mutual: bool = True,
          device: str | torch.device | None = None):
    """Match query descriptors (N, D) to database descriptors (M, D).

    Inputs are numpy arrays or torch tensors (any float dtype; computed in float32 on
    ``device``, by default the device of ``desc_q`` if it is a tensor, else the CPU).
    Returns ``matches`` (K, 2) int64 rows ``(index in desc_q, index in desc_db)``, sorted
    by query index, and their descriptor ``distances`` (K,) float32 (Euclidean, not
    kornia's ratios), as numpy arrays for numpy ``desc_q`` and as tensors otherwise.
    """
    as_numpy = not isinstance(desc_q, torch.Tensor)
    if device is None:
        device = desc_q.device if isinstance(desc_q, torch.Tensor) else "cpu"
    q, db = _as_tensor(desc_q, device), _as_tensor(desc_db, device)
    if q.ndim != 2 or db.ndim != 2:
        raise PramlocError(f"match: descriptors must be (N, D) and (M, D), got {tuple(q.shape)} and "
                           f"{tuple(db.shape)}")
    if len(q) and len(db) and q.shape[1] != db.shape[1]:
        raise PramlocError(f"match: descriptor dimensions differ ({q.shape[1]} vs {db.shape[1]})")
    if ratio is not None and not 0 < ratio <= 1:
        raise PramlocError(f"match: ratio must be in (0, 1] or None, got {ratio}")

    need = 2 if ratio is not None else 1
    if len(q) < (need if mutual else 1) or len(db) < need:
        matches = torch.empty((0, 2), dtype=torch.long, device=q.device)
        dists = torch.empty((0,), dtype=torch.float32, device=q.device)
    else:
        dm = _squared_distances(q, db)  # (N, M)
        ratio2 = None if ratio is None else ratio * ratio
        if mutual:
            matches = _mutual(q, db, dm, ratio2)
        elif ratio is not None:
            _, matches = KF.match_snn(q, db, th=ratio2, dm=dm)
        else:
            _, matches = KF.match_nn(q, db, dm=dm)
        matches = matches.long().reshape(-1, 2)
        matches = matches[torch.argsort(matches[:, 0], stable=True)]
        dists = dm[matches[:, 0], matches[:, 1]].float().sqrt()
    if as_numpy:
        return matches.cpu().numpy(), dists.cpu().numpy()
    return matches, dists
