"""Pose-accuracy metrics (on synthetic poses), the ``pramloc evaluate`` command and retrieval
recall (on real poses)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from scipy.spatial.transform import Rotation

from pramloc.cli import main as cli
from pramloc.errors import PramlocError
from pramloc.evaluate import evaluate, parse_thresholds, pose_errors, retrieval_recall
from pramloc.geometry import Pose
from pramloc.io import write_poses

from .conftest import KITCHEN, STRECHA, frame, need_data



@pytest.fixture(scope="module")
def kitchen():
    need_data(KITCHEN / "poses")
    from pramloc.datasets import load_dataset

    return {im.name: im.pose for im in load_dataset("7scenes", KITCHEN).images}


def rotated(pose: Pose, axis, degrees: float) -> Pose:
    """The same camera centre, the camera turned by ``degrees`` about ``axis`` (camera frame)."""
    R = Rotation.from_rotvec(np.radians(degrees) * np.asarray(axis, float) / np.linalg.norm(axis)).as_matrix() @ pose.R
    return Pose.from_Rt(R, -R @ pose.center)


def moved(pose: Pose, offset) -> Pose:
    """The same orientation, the camera centre moved by ``offset`` (world frame)."""
    return Pose.from_Rt(pose.R, -pose.R @ (pose.center + np.asarray(offset, float)))


def synthetic_poses(names: list[str], seed: int = 0) -> dict[str, Pose]:
    """Random world-to-camera poses (uniform rotations, centres within a few metres)."""
    rng = np.random.default_rng(seed)
    return {n: Pose.from_Rt(R, rng.normal(size=3) * 2) for n, R in
            zip(names, Rotation.random(len(names), random_state=seed).as_matrix())}


# ---------------------------------------------------------------- metrics, hand-computed

def test_pose_errors_hand_computed():
    gt = synthetic_poses([frame(3)])[frame(3)]
    assert pose_errors(gt, gt) == pytest.approx((0.0, 0.0), abs=1e-6)
    assert pose_errors(rotated(gt, [0, 1, 0], 10), gt) == pytest.approx((0.0, 10.0), abs=1e-6)
    assert pose_errors(rotated(gt, [1, 1, 0], 180), gt) == pytest.approx((0.0, 180.0), abs=1e-5)
    assert pose_errors(moved(gt, [0.3, 0.0, 0.4]), gt) == pytest.approx((0.5, 0.0), abs=1e-6)


def test_missing_query_is_an_infinite_failure():
    names = [frame(i) for i in (3, 9, 15, 21)]
    gt = synthetic_poses(names)
    results = {names[0]: gt[names[0]], names[1]: moved(gt[names[1]], [0.1, 0, 0]),
               names[2]: rotated(gt[names[2]], [0, 0, 1], 3)}
    m = evaluate(results, gt, [(0.05, 5), (0.25, 2)])
    assert m["missing"] == [names[3]] and m["num_localized"] == 3 and m["num_queries"] == 4
    assert m["per_query"][names[3]] == {"translation": math.inf, "rotation_deg": math.inf}
    assert [r["recall"] for r in m["recall"]] == [0.5, 0.5]   # (0, 2) and (0, 1) of 4
    assert m["median_translation"] == pytest.approx(0.05) and m["median_rotation_deg"] == pytest.approx(1.5)
    with pytest.raises(PramlocError, match="not in the ground truth"):
        evaluate({"rgb/nope.jpg": gt[names[0]]}, gt)


def test_parse_thresholds():
    assert parse_thresholds("0.05,5;0.25,2") == [(0.05, 5.0), (0.25, 2.0)]
    with pytest.raises(PramlocError, match="metres,degrees"):
        parse_thresholds("0.05;5")


# ---------------------------------------------------------------- the CLI on real 7-Scenes poses

@pytest.fixture()
def kitchen_results(kitchen, tmp_path):
    """5 interleaved queries; results for 4 of them, perturbed by known amounts."""
    names = [frame(i) for i in (3, 9, 15, 21, 27)]
    split = tmp_path / "queries.txt"
    split.write_text("\n".join(names) + "\n")
    exact = {n: kitchen[n] for n in names[:4]}
    perturbed = {names[0]: kitchen[names[0]],                                   # t 0,   R 0
                 names[1]: moved(kitchen[names[1]], [0.0, 0.1, 0.0]),           # t 0.1, R 0
                 names[2]: rotated(kitchen[names[2]], [1, 0, 0], 3),            # t 0,   R 3
                 names[3]: rotated(moved(kitchen[names[3]], [0.6, 0, 0.8]), [0, 1, 0], 8)}  # t 1, R 8
    return split, write_poses(tmp_path / "exact.txt", exact), write_poses(tmp_path / "perturbed.txt", perturbed)


def test_cli_evaluate_real_results(kitchen_results, tmp_path):
    split, exact, perturbed = kitchen_results
    out_json, out_png = tmp_path / "out" / "eval.json", tmp_path / "out" / "eval.png"
    res = CliRunner().invoke(cli, ["evaluate", str(exact), str(perturbed), "--dataset", "7scenes",
                                   "--root", str(KITCHEN), "--queries", str(split),
                                   "--json", str(out_json), "--plot", str(out_png)])
    assert res.exit_code == 0, res.output
    rows = {line.split()[0]: line.split() for line in res.output.splitlines() if line.startswith(("exact", "perturbed"))}
    assert rows["perturbed"][1:3] == ["4/5", "1"]
    assert "not localized" in res.output and "frame-000027" in res.output

    report = json.loads(out_json.read_text())
    runs = {r["label"]: r["metrics"] for r in report["runs"]}
    p = runs["perturbed"]
    assert p["missing"] == [frame(27)]
    assert p["per_query"][frame(27)] == {"translation": None, "rotation_deg": None}
    assert p["per_query"][frame(21)]["translation"] == pytest.approx(1.0, abs=1e-6)
    assert p["per_query"][frame(21)]["rotation_deg"] == pytest.approx(8.0, abs=1e-5)
    assert p["median_translation"] == pytest.approx(0.1, abs=1e-6)          # 0, 0, 0.1, 1, inf
    assert p["median_rotation_deg"] == pytest.approx(3.0, abs=1e-5)         # 0, 0, 3, 8, inf
    # 5cm/5deg: 0,2; 25cm/2deg: 0,1; 50cm/5deg: 0,1,2; 5m/10deg: 0,1,2,3 -- of 5 queries
    assert [r["recall"] for r in p["recall"]] == pytest.approx([0.4, 0.4, 0.6, 0.8])
    assert [r["recall"] for r in runs["exact"]["recall"]] == pytest.approx([0.8] * 4)
    assert runs["exact"]["median_translation"] == pytest.approx(0.0, abs=1e-6)
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_evaluate_gt_poses_and_thresholds(kitchen_results, tmp_path):
    split, exact, perturbed = kitchen_results
    res = CliRunner().invoke(cli, ["evaluate", str(perturbed), "--gt-poses", str(exact),
                                   "--thresholds", "0.2,5"])
    assert res.exit_code == 0, res.output
    row = next(line.split() for line in res.output.splitlines() if line.startswith("perturbed"))
    assert row[1] == "4/4" and row[-1] == "75.0%"     # the 1 m / 8 deg query fails


def test_cli_evaluate_errors_name_the_line(kitchen_results, tmp_path):
    split, exact, _ = kitchen_results
    gt_args = ["--dataset", "7scenes", "--root", str(KITCHEN), "--queries", str(split)]
    bad = tmp_path / "bad.txt"
    bad.write_text(exact.read_text() + "rgb/frame-000033.color.jpg 1 0 0 zero 0 0 0\n")
    res = CliRunner().invoke(cli, ["evaluate", str(bad)] + gt_args)
    assert res.exit_code == 2 and f"{bad}:5:" in res.output and len(res.output.strip().splitlines()) == 1

    unknown = tmp_path / "unknown.txt"
    unknown.write_text(exact.read_text() + "rgb/frame-999999.color.jpg 1 0 0 0 0 0 0\n")
    res = CliRunner().invoke(cli, ["evaluate", str(unknown)] + gt_args)
    assert res.exit_code == 2 and f"{unknown}:5:" in res.output and "not in the ground truth" in res.output
    assert len(res.output.strip().splitlines()) == 1

    res = CliRunner().invoke(cli, ["evaluate", str(exact), "--dataset", "7scenes"])
    assert res.exit_code == 2 and "--root" in res.output


def test_gt_model_strecha(tmp_path):
    need_data(STRECHA / "gt_colmap_text")
    from pramloc.datasets import load_dataset
    from pramloc.evaluate import load_ground_truth, main

    gt, names = load_ground_truth(gt_model=STRECHA / "gt_colmap_text")
    assert len(names) == 25
    # The COLMAP model and the native Strecha cameras agree.
    native = {Path(im.name).name: im.pose for im in load_dataset("strecha", STRECHA).images}
    res = write_poses(tmp_path / "native.txt", native)
    report = main([res], gt, names)
    assert report["runs"][0]["metrics"]["median_translation"] < 1e-3
    assert report["runs"][0]["metrics"]["recall"][0]["recall"] == 1.0


def test_cli_gt_model_takes_dataset_names(tmp_path):
    """Results and a split that name Strecha images as the dataset does (``images/0001.jpg``)
    are evaluated against its COLMAP ground truth (``0001.jpg``); a median of inf is
    explained; a file called ``results`` is labelled with its folder."""
    need_data(STRECHA / "gt_colmap_text")
    from pramloc.datasets import load_dataset

    native = {im.name: im.pose for im in load_dataset("strecha", STRECHA).images}
    assert next(iter(native)).startswith("images/")
    queries = [n for n in native if n.endswith(("1.jpg", "3.jpg"))]
    split = tmp_path / "query.txt"
    split.write_text("\n".join(queries) + "\n")
    out = tmp_path / "herzjesu" / "results.txt"
    write_poses(out, {n: native[n] for n in queries[:2]})       # most queries missing
    res = CliRunner().invoke(cli, ["evaluate", str(out), "--gt-model", str(STRECHA / "gt_colmap_text"),
                                   "--queries", str(split)])
    assert res.exit_code == 0, res.output
    row = next(line.split() for line in res.output.splitlines() if line.startswith("herzjesu/results"))
    assert row[1] == f"2/{len(queries)}" and row[4] == "inf"
    assert "median inf: at least half of the queries were not localized" in res.output


# ---------------------------------------------------------------- retrieval recall

def test_retrieval_recall_real_poses(kitchen):
    db = {frame(i): kitchen[frame(i)] for i in range(0, 1000, 6)}
    queries = {frame(i): kitchen[frame(i)] for i in (3, 303)}
    retrieved = {frame(3): [frame(900), frame(600), frame(0)],    # frame 0: 2 mm away, positive at rank 3
                 frame(303): [frame(900)] * 10}                    # 0.76 m and 33 deg away: negative
    r = retrieval_recall(retrieved, queries, db)
    assert r["recall@1"] == 0.0 and r["recall@5"] == 0.5 and r["recall@10"] == 0.5
    assert r["num_queries"] == 2 and r["num_without_positive"] == 0
    assert retrieval_recall({}, queries, db)["recall@10"] == 0.0      # no retrieval: failures
    with pytest.raises(PramlocError, match="frame-999999"):
        retrieval_recall({frame(3): ["rgb/frame-999999.color.jpg"]}, queries, db)


# ---------------------------------------------------------------- alignment (maps from images alone)

def test_alignment_recovers_a_similarity_despite_outliers(kitchen):
    """Real camera poses moved into another frame by a known similarity, 3 of 40 centres
    corrupted: the alignment finds the similarity, flags the 3, and maps poses back exactly."""
    from pramloc.evaluate import Similarity, align_to_reference

    names = sorted(kitchen)[:40]
    gt = {n: kitchen[n] for n in names}
    R = Rotation.from_euler("xyz", [20, -35, 110], degrees=True).as_matrix()
    to_map = Similarity(0.37, R, np.array([1.0, -2.0, 0.5]))  # reference -> map frame
    map_poses = {n: to_map.apply_pose(p) for n, p in gt.items()}
    for n in names[:3]:
        map_poses[n] = moved(map_poses[n], [0.3, 0, 0])
    sim, rec = align_to_reference(map_poses, gt)
    assert rec["images"] == 40 and rec["inliers"] == 37 and rec["residual_max"] < 1e-6
    assert sim.scale == pytest.approx(1 / 0.37, rel=1e-6)
    for n in names[3:]:
        dt, dr = pose_errors(sim.apply_pose(map_poses[n]), gt[n])
        assert dt < 1e-6 and dr < 1e-4
    with pytest.raises(PramlocError, match="share 0 image"):
        align_to_reference({"x.jpg": gt[names[0]]}, gt)


def test_cli_evaluate_align_map_from_images_alone(south_root, tmp_path):
    """A map of 10 South Building photos by structure-from-motion (its own frame and
    scale), two photos between them localized against it (intrinsics: the map's camera, by
    EXIF), then evaluated against the reference model with --align: the map the results'
    log names is aligned first and the poses agree with the reference; without --align they
    are far off."""
    photos = [f"P11801{i}.JPG" for i in range(41, 53)]
    queries, db = photos[4:9:4], [p for p in photos if p not in photos[4:9:4]]
    (tmp_path / "db.txt").write_text("\n".join(db) + "\n")
    (tmp_path / "q.txt").write_text("\n".join(queries) + "\n")
    out, results = tmp_path / "map", tmp_path / "res.txt"
    res = CliRunner().invoke(cli, ["-q", "build-map", "--images", str(south_root / "images"), "--split",
                                   str(tmp_path / "db.txt"), "--out", str(out), "--no-train",
                                   "--set", "features.max_side=800", "--set", "landmarks.num_landmarks=4"])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(cli, ["-q", "localize", str(out), "--images", str(south_root / "images"),
                                   "--queries", str(tmp_path / "q.txt"), "--out", str(results), "--workers", "1"])
    assert res.exit_code == 0, res.output
    log = [json.loads(line) for line in results.with_name("res_log.jsonl").read_text().splitlines()]
    assert all(r["intrinsics"].startswith("from the map's camera (Panasonic DMC-TZ3") for r in log)
    args = ["--gt-model", str(south_root / "reference"), "--queries", str(tmp_path / "q.txt")]
    res = CliRunner().invoke(cli, ["evaluate", str(results), *args, "--align", "--json", str(tmp_path / "e.json")])
    assert res.exit_code == 0, res.output
    assert f"aligned with {out} on 10/10 camera centres" in res.output
    run = json.loads((tmp_path / "e.json").read_text())["runs"][0]
    assert run["alignment"]["residual_median"] < 0.01  # the scene spans ~9 units
    m = run["metrics"]
    assert m["num_localized"] == 2 and m["recall"][0]["recall"] == 1.0  # within 0.05 units, 5 deg
    res = CliRunner().invoke(cli, ["evaluate", str(results), *args, "--json", str(tmp_path / "p.json")])
    assert json.loads((tmp_path / "p.json").read_text())["runs"][0]["metrics"]["median_translation"] > 1.0
