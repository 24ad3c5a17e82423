"""Descriptor matching on two real adjacent 7-Scenes frames."""

import cv2
import numpy as np
import pytest
import torch

from pramloc.config import load_config
from pramloc.errors import PramlocError
from pramloc.features import extract_path
from pramloc.matching import match



@pytest.fixture(scope="module")
def pair(kitchen_root):
    conf = load_config("indoor").features
    return [extract_path(kitchen_root / f"rgb/frame-{i:06d}.color.jpg", conf) for i in (0, 3)]


def inlier_share(f0, f1, matches):
    p0 = f0["keypoints"][matches[:, 0]].astype(np.float64)
    p1 = f1["keypoints"][matches[:, 1]].astype(np.float64)
    _, mask = cv2.findFundamentalMat(p0, p1, cv2.FM_RANSAC, 1.0, 0.999, 5000)
    return float(mask.mean())


def test_adjacent_frames_match_consistently(pair):
    f0, f1 = pair
    matches, dists = match(f0["descriptors"], f1["descriptors"], ratio=0.9, mutual=True)
    assert matches.dtype == np.int64 and matches.shape[1] == 2 and dists.shape == (len(matches),)
    assert len(matches) > 300
    assert inlier_share(f0, f1, matches) > 0.8
    # One-to-one, sorted by query index, distances are the descriptor distances.
    assert len(np.unique(matches[:, 0])) == len(np.unique(matches[:, 1])) == len(matches)
    assert np.all(np.diff(matches[:, 0]) > 0)
    ref = np.linalg.norm(f0["descriptors"][matches[:, 0]] - f1["descriptors"][matches[:, 1]], axis=1)
    np.testing.assert_allclose(dists, ref, atol=1e-4)


def test_options_trade_matches_for_precision(pair):
    f0, f1 = pair
    d0, d1 = f0["descriptors"], f1["descriptors"]
    mnn, _ = match(d0, d1, ratio=None, mutual=True)
    smnn, _ = match(d0, d1, ratio=0.9, mutual=True)
    strict, _ = match(d0, d1, ratio=0.7, mutual=True)
    snn, _ = match(d0, d1, ratio=0.8, mutual=False)
    nn, _ = match(d0, d1, ratio=None, mutual=False)
    assert len(nn) == len(d0)
    assert len(nn) > len(mnn) > len(smnn) > len(strict) > 100
    assert {tuple(m) for m in smnn} <= {tuple(m) for m in mnn}  # ratio only removes matches
    assert inlier_share(f0, f1, strict) >= inlier_share(f0, f1, nn)
    assert inlier_share(f0, f1, snn) > 0.8


@pytest.mark.parametrize("ratio", [None, 0.9])
def test_mutual_matching_is_symmetric(pair, ratio):
    f0, f1 = pair
    ab, dab = match(f0["descriptors"], f1["descriptors"], ratio=ratio)
    ba, dba = match(f1["descriptors"], f0["descriptors"], ratio=ratio)
    assert {tuple(m) for m in ab} == {tuple(m) for m in ba[:, ::-1]}
    np.testing.assert_allclose(np.sort(dab), np.sort(dba), atol=1e-5)


def test_empty_and_tiny_inputs(pair):
    d = pair[0]["descriptors"]
    empty = np.zeros((0, 128), np.float32)
    for a, b, kwargs in [(empty, d, {}), (d, empty, {}), (empty, empty, {}),
                         (d[:1], d, {"ratio": 0.9}),              # no reverse ratio test possible
                         (d, d[:1], {"ratio": 0.8, "mutual": False})]:
        m, dist = match(a, b, **kwargs)
        assert m.shape == (0, 2) and m.dtype == np.int64 and dist.shape == (0,)
    # Without a ratio test a single descriptor still matches.
    m, _ = match(d[:1], d, ratio=None)
    assert m.tolist() == [[0, 0]]
    with pytest.raises(PramlocError, match="dimensions differ"):
        match(d, np.ones((5, 64), np.float32))
    with pytest.raises(PramlocError, match="ratio"):
        match(d, d, ratio=1.5)


def test_torch_inputs(pair):
    f0, f1 = pair
    ref, dref = match(f0["descriptors"], f1["descriptors"])
    m, dist = match(torch.from_numpy(f0["descriptors"]), torch.from_numpy(f1["descriptors"]).double())
    assert isinstance(m, torch.Tensor) and m.dtype == torch.int64
    np.testing.assert_array_equal(m.numpy(), ref)
    np.testing.assert_allclose(dist.numpy(), dref, atol=1e-6)
    m, _ = match(torch.zeros(0, 128), torch.from_numpy(f1["descriptors"]))
    assert isinstance(m, torch.Tensor) and m.shape == (0, 2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu(pair):
    f0, f1 = pair
    ref, _ = match(f0["descriptors"], f1["descriptors"])
    m, _ = match(torch.from_numpy(f0["descriptors"]).cuda(), torch.from_numpy(f1["descriptors"]).cuda())
    assert m.is_cuda
    common = {tuple(x) for x in m.cpu().numpy()} & {tuple(x) for x in ref}
    assert len(common) >= 0.99 * len(ref)


@pytest.mark.parametrize("ratio,mutual", [(None, True), (0.9, True), (0.8, False), (None, False)])
def test_same_matches_as_kornia_on_cdist(pair, ratio, mutual):
    """The squared distance matrix is computed in a reused buffer (no page faults on large
    ones) and matched with the squared ratio: the matches are kornia's on torch.cdist, for
    every option, a larger matrix in between."""
    import kornia.feature as KF

    from pramloc.matching import _squared_distances

    f0, f1 = pair
    q, db = torch.from_numpy(f0["descriptors"]).float(), torch.from_numpy(f1["descriptors"]).float()
    torch.testing.assert_close(_squared_distances(q, db).clone().sqrt(), torch.cdist(q, db), atol=1e-5, rtol=0)
    fn = {(None, True): KF.match_mnn, (None, False): KF.match_nn}.get((ratio, mutual))
    g = torch.Generator().manual_seed(0)
    noisy = torch.nn.functional.normalize(db + 0.05 * torch.randn(db.shape, generator=g), dim=1)
    for a, b in [(q, db), (q, torch.cat([db, noisy])), (q[:300], db)]:
        dm = torch.cdist(a, b)
        _, ref = (fn(a, b, dm=dm) if fn is not None else
                  (KF.match_smnn if mutual else KF.match_snn)(a, b, th=ratio, dm=dm))
        ref = ref.long()[torch.argsort(ref[:, 0].long(), stable=True)]
        m, dist = match(a, b, ratio=ratio, mutual=mutual)
        assert len(m) > 0
        torch.testing.assert_close(m, ref)
        torch.testing.assert_close(dist, dm[m[:, 0], m[:, 1]], atol=1e-5, rtol=0)
