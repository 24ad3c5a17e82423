"""Absolute pose with the real cameras and ground-truth poses of 7-Scenes and Strecha.

Correspondences are made from the real geometry: pixels spread over the real image,
back-projected at realistic depths with the real pose, observed with 1 px noise and
30 % outliers.
"""

from types import SimpleNamespace

import numpy as np
import pytest

from pramloc.datasets import load_dataset
from pramloc.errors import PramlocError
from pramloc.geometry import Pose, project
from pramloc.registration import PoseEstimate, estimate_pose, match_by_projection, refine_by_projection, solve_pose

# dataset: root fixture, split, depth range (m), RANSAC threshold (px), projection radius (px)
SCENES = {
    "7scenes": ("kitchen_root", "splits/interleaved_query.txt", (0.8, 4.0), 8.0, 40.0),
    "strecha": ("strecha_root", "splits/query.txt", (5.0, 25.0), 12.0, 200.0),
}


@pytest.fixture(scope="module", params=list(SCENES))
def scene(request):
    root_fixture, split, depths, max_error, radius = SCENES[request.param]
    root = request.getfixturevalue(root_fixture)
    records = load_dataset(request.param, root, root / split).images[:3]
    return records, depths, max_error, radius


def pose_error(a: Pose, b: Pose) -> tuple[float, float]:
    """Camera centre distance (m) and rotation angle (deg)."""
    cos = (np.trace(a.R @ b.R.T) - 1) / 2
    return float(np.linalg.norm(a.center - b.center)), float(np.degrees(np.arccos(np.clip(cos, -1, 1))))


def make_points(record, depths, n, rng):
    """n world points seen by the record's GT camera, and their exact pixels (keypoint convention)."""
    cam, pose = record.camera, record.pose
    uv = rng.uniform([0, 0], [cam.width - 1, cam.height - 1], (n, 2))
    z = rng.uniform(*depths, n)
    K = cam.K()
    xc = np.stack([(uv[:, 0] + 0.5 - K[0, 2]) / K[0, 0] * z, (uv[:, 1] + 0.5 - K[1, 2]) / K[1, 1] * z, z], 1)
    xyz = (xc - pose.tvec) @ pose.R  # camera -> world
    reproj, depth = project(cam, pose, xyz)
    np.testing.assert_allclose(reproj, uv, atol=1e-6)  # the GT geometry is consistent
    return xyz, uv


def perturb(pose: Pose, metres: float, degrees: float, rng) -> Pose:
    from scipy.spatial.transform import Rotation

    axis = rng.normal(size=3)
    dR = Rotation.from_rotvec(np.radians(degrees) * axis / np.linalg.norm(axis)).as_matrix()
    step = rng.normal(size=3)
    centre = pose.center + metres * step / np.linalg.norm(step)
    R = dR @ pose.R
    return Pose.from_Rt(R, -R @ centre)


def test_estimate_pose_with_noise_and_outliers(scene):
    records, depths, max_error, _ = scene
    rng = np.random.default_rng(0)
    for record in records:
        xyz, uv = make_points(record, depths, 400, rng)
        obs = uv + rng.normal(0, 1.0, uv.shape)
        n_out = int(0.3 * len(obs))
        cam = record.camera
        obs[:n_out] = rng.uniform([0, 0], [cam.width - 1, cam.height - 1], (n_out, 2))
        est = estimate_pose(obs, xyz, cam, max_error_px=max_error, min_inliers=30)
        assert isinstance(est, PoseEstimate)
        dt, dr = pose_error(est.pose, record.pose)
        assert dt < 0.01 and dr < 0.1, (record.name, dt, dr)
        assert est.inlier_mask.shape == (400,) and est.inlier_mask.dtype == bool
        assert est.num_inliers == est.inlier_mask.sum()
        assert est.inlier_mask[n_out:].mean() > 0.95 and est.inlier_mask[:n_out].mean() < 0.1


def test_lo_ransac_alone_is_close_to_the_refined_pose(scene):
    """``refine=False`` (a first pose, refined later by projection) skips the non-linear
    refinement: on noisy matches with outliers the same inliers, a pose as close to the truth."""
    records, depths, max_error, _ = scene
    rng = np.random.default_rng(3)
    for record in records:
        xyz, uv = make_points(record, depths, 300, rng)
        obs = uv + rng.normal(0, 1.0, uv.shape)
        obs[:60] = rng.uniform([0, 0], [record.camera.width - 1, record.camera.height - 1], (60, 2))
        refined, _ = solve_pose(obs, xyz, record.camera, max_error, 30)
        lo, why = solve_pose(obs, xyz, record.camera, max_error, 30, refine=False)
        assert why == "" and abs(lo.num_inliers - refined.num_inliers) <= 3
        dt, dr = pose_error(lo.pose, record.pose)
        assert dt < 0.01 and dr < 0.1, (record.name, dt, dr)


@pytest.mark.parametrize("model, params", [
    ("SIMPLE_PINHOLE", [520, 320, 240]), ("PINHOLE", [520, 530, 320, 240]),
    ("SIMPLE_RADIAL", [520, 320, 240, 0.05]), ("RADIAL", [520, 320, 240, 0.05, -0.01]),
    ("OPENCV", [520, 530, 320, 240, 0.05, -0.01, 0.001, 0.001])])
def test_refinement_matches_pycolmaps(scene, model, params):
    """PoseLib's refinement (:func:`refine_pose`) minimises what pycolmap's
    ``refine_absolute_pose`` minimises (reprojection errors, Cauchy loss of 1 px, the
    camera's distortion included): from a pose 5 cm / 1 degree off on 1 px noise, both reach
    the same pose, better than the start."""
    import pycolmap

    from pramloc.geometry import Camera
    from pramloc.registration import refine_pose

    records, depths, _, _ = scene
    rng = np.random.default_rng(5)
    record = records[0]
    cam = Camera(model, 640, 480, np.array(params, float))
    xyz, _ = make_points(record, depths, 300, rng)
    uv = np.asarray(cam.to_pycolmap().img_from_cam(xyz @ record.pose.R.T + record.pose.tvec)) - 0.5
    obs = uv + rng.normal(0, 1.0, uv.shape)
    start = perturb(record.pose, 0.05 * depths[0], 1.0, rng)
    ours = refine_pose(start, obs, xyz, cam)
    theirs = Pose.from_pycolmap(pycolmap.refine_absolute_pose(
        start.to_pycolmap(), obs + 0.5, xyz, np.ones(len(obs), bool), cam.to_pycolmap())["cam_from_world"])
    dt, dr = pose_error(ours, theirs)
    assert dt < 1e-4 * depths[0] and dr < 1e-3, (dt, dr)
    (et, er), (st, sr) = pose_error(ours, record.pose), pose_error(start, record.pose)
    assert et < st / 5 and er < sr / 5, (et, er, st, sr)


def test_exact_correspondences_give_exact_pose(scene):
    """No noise: the pose is recovered to numerical precision (checks the 0.5 px convention)."""
    records, depths, max_error, _ = scene
    record = records[0]
    xyz, uv = make_points(record, depths, 100, np.random.default_rng(1))
    est = estimate_pose(uv, xyz, record.camera, max_error_px=max_error, min_inliers=30)
    dt, dr = pose_error(est.pose, record.pose)
    assert dt < 1e-4 and dr < 1e-3 and est.num_inliers == 100


def test_too_few_or_inconsistent_points_give_none(scene):
    records, depths, max_error, _ = scene
    record = records[0]
    cam = record.camera
    rng = np.random.default_rng(2)
    xyz, uv = make_points(record, depths, 40, rng)
    assert estimate_pose(uv[:3], xyz[:3], cam, max_error, min_inliers=0) is None  # P3P needs a 4th point
    assert estimate_pose(uv[:0], xyz[:0], cam, max_error, min_inliers=0) is None
    assert estimate_pose(uv[:20], xyz[:20], cam, max_error, min_inliers=30) is None
    assert estimate_pose(uv[:20], xyz[:20], cam, max_error, min_inliers=10) is not None
    # Pure outliers: pixels unrelated to the points.
    noise = rng.uniform([0, 0], [cam.width - 1, cam.height - 1], (200, 2))
    assert estimate_pose(noise, make_points(record, depths, 200, rng)[0], cam, max_error, 30) is None
    with pytest.raises(PramlocError, match="2D points"):
        estimate_pose(uv[:10], xyz[:9], cam, max_error, 4)


def make_map_and_query(record, depths, rng, num_points=1500, seen=0.6, distractors=300):
    """Map points with 128-D unit descriptors; a query seeing a share of them (noisy
    descriptors, 1 px noise) plus distractor keypoints. Returns map and query arrays and
    the true map index of each query keypoint (-1: distractor)."""
    cam = record.camera
    xyz, uv = make_points(record, depths, num_points, rng)
    map_desc = rng.normal(size=(num_points, 128)).astype(np.float32)
    map_desc /= np.linalg.norm(map_desc, axis=1, keepdims=True)
    ids = rng.choice(num_points, int(seen * num_points), replace=False)
    kps = np.concatenate([uv[ids] + rng.normal(0, 1.0, (len(ids), 2)),
                          rng.uniform([0, 0], [cam.width - 1, cam.height - 1], (distractors, 2))])
    desc = np.concatenate([map_desc[ids] + rng.normal(0, 0.03, (len(ids), 128)),
                           rng.normal(size=(distractors, 128))]).astype(np.float32)
    desc /= np.linalg.norm(desc, axis=1, keepdims=True)
    truth = np.concatenate([ids, -np.ones(distractors, int)])
    return xyz, map_desc, kps, desc, truth


def test_refine_by_projection_improves_a_perturbed_pose(scene):
    records, depths, max_error, radius = scene
    rng = np.random.default_rng(3)
    for record in records:
        xyz, map_desc, kps, desc, truth = make_map_and_query(record, depths, rng)
        start = perturb(record.pose, 0.05, 2.0, rng)
        dt0, dr0 = pose_error(start, record.pose)
        est = refine_by_projection(start, record.camera, kps, desc, xyz, map_desc, radius_px=radius,
                                   ratio=0.9, max_error_px=max_error, min_inliers=30)
        assert est is not None and est.matches is not None
        dt, dr = pose_error(est.pose, record.pose)
        assert dt < 0.01 and dr < 0.1 and dt < dt0 and dr < dr0, (record.name, dt, dr)
        correct = truth[est.matches[:, 0]] == est.matches[:, 1]
        assert correct.mean() > 0.95
        assert est.num_inliers > 0.8 * (truth >= 0).sum()
        assert len(est.inlier_mask) == len(est.matches)


def test_refine_by_projection_keeps_the_better_estimate(scene):
    records, depths, max_error, radius = scene
    record = records[0]
    rng = np.random.default_rng(4)
    xyz, map_desc, kps, desc, truth = make_map_and_query(record, depths, rng)
    args = (record.camera, kps, desc, xyz, map_desc)
    first = PoseEstimate(record.pose, 10**6, np.ones(1, bool))  # claims more inliers than possible
    assert refine_by_projection(first, *args, radius, 0.9, max_error, 30) is first
    weak = PoseEstimate(record.pose, 5, np.ones(5, bool))
    better = refine_by_projection(weak, *args, radius, 0.9, max_error, 30)
    assert better is not weak and better.num_inliers > 5
    # Nothing within the radius: the first estimate stands, a bare pose gives None.
    assert refine_by_projection(weak, *args, 1e-3, 0.9, max_error, 30) is weak
    assert refine_by_projection(record.pose, *args, 1e-3, 0.9, max_error, 30) is None


def test_match_by_projection_visibility(scene):
    records, depths, _, radius = scene
    record = records[0]
    rng = np.random.default_rng(5)
    xyz, map_desc, kps, desc, truth = make_map_and_query(record, depths, rng, num_points=300, distractors=0)
    m, d = match_by_projection(record.pose, record.camera, kps, desc, xyz, map_desc, radius, 0.9)
    assert m.dtype == np.int64 and np.all(truth[m[:, 0]] == m[:, 1]) and len(m) > 0.9 * len(kps)
    assert len(np.unique(m[:, 1])) == len(m)  # one keypoint per map point
    # Points behind the camera (mirrored through the centre) are never candidates.
    behind = 2 * record.pose.center - xyz
    m, _ = match_by_projection(record.pose, record.camera, kps, desc, behind, map_desc, radius, 0.9)
    assert len(m) == 0
    m, _ = match_by_projection(record.pose, record.camera, kps[:0], desc[:0], xyz, map_desc, radius, 0.9)
    assert m.shape == (0, 2)


@pytest.mark.parametrize("num_groups", [50, 70_000])  # radix-sorted uint16 keys, and wider ones
def test_nearest_per_group_matches_a_loop(num_groups):
    """The grouped nearest/second-nearest of the matching by projection, against a plain
    loop: ties go to the first pair in input order, a lone pair's second value is inf."""
    from pramloc.registration import _nearest_per_group

    rng = np.random.default_rng(0)
    group = rng.choice(rng.choice(num_groups, 40, replace=False), 400)
    value = rng.integers(0, 30, 400).astype(np.float32)  # many ties
    best, second = _nearest_per_group(group, value, num_groups)
    present = np.unique(group)
    assert len(best) == len(second) == len(present)
    for g, b, s2 in zip(present, best, second):
        idx = np.flatnonzero(group == g)
        assert b == idx[np.argmin(value[idx])]  # argmin: the first of equal values
        rest = np.delete(value[idx], np.argmin(value[idx]))
        assert s2 == (rest.min() if len(rest) else np.inf)
    assert [len(a) for a in _nearest_per_group(group[:0], value[:0], num_groups)] == [0, 0]


def test_solve_pose_names_the_threshold_missed(scene):
    records, depths, max_error, _ = scene
    record = records[0]
    rng = np.random.default_rng(5)
    xyz, uv = make_points(record, depths, 60, rng)
    uv[20:] = rng.uniform([0, 0], [record.camera.width - 1, record.camera.height - 1], (40, 2))  # 40 outliers
    assert solve_pose(uv[:20], xyz[:20], record.camera, max_error, 30) == (None, "20 matches < min_inliers 30")
    assert solve_pose(uv[:3], xyz[:3], record.camera, max_error, 0) == (None, "3 matches < the 4 of PnP")
    est, why = solve_pose(uv, xyz, record.camera, max_error, 30)
    assert est is None and why.startswith("2") and why.endswith(" inliers < min_inliers 30 (60 matches)"), why
    est, why = solve_pose(uv, xyz, record.camera, max_error, 15)
    assert why == "" and est.num_inliers >= 20 and len(est.inlier_mask) == 60


def test_focal_length_refined_for_estimated_intrinsics(scene):
    """A camera whose focal is 10 % off: with ``refine_focal`` the estimate's camera has the
    true focal back and the pose is exact; without, the focal is kept as given."""
    from pramloc.geometry import Camera

    records, depths, max_error, _ = scene
    record = records[0]
    K = record.camera.K()
    true = Camera("SIMPLE_PINHOLE", record.camera.width, record.camera.height, [K[0, 0], K[0, 2], K[1, 2]])
    guess = Camera("SIMPLE_PINHOLE", true.width, true.height, [1.1 * K[0, 0], K[0, 2], K[1, 2]])
    xyz, uv = make_points(SimpleNamespace(camera=true, pose=record.pose), depths, 200, np.random.default_rng(6))
    est = estimate_pose(uv, xyz, guess, 10 * max_error, 30, refine_focal=True)
    assert est.camera.params[0] == pytest.approx(K[0, 0], rel=1e-4)
    dt, dr = pose_error(est.pose, record.pose)
    assert dr < 1e-2 and dt < 1e-3 * depths[1]
    fixed = estimate_pose(uv, xyz, guess, 10 * max_error, 30)
    assert fixed.camera.params[0] == guess.params[0]
    first, _ = solve_pose(uv, xyz, guess, 10 * max_error, 30, refine_focal=True, refine=False)
    assert first.camera.params[0] == pytest.approx(K[0, 0], rel=1e-4)  # refine_focal implies the refinement
