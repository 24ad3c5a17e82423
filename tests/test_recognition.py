"""The landmark recognizer on real 7-Scenes keypoints labelled by the map builder:
input validation, learning, checkpoint round trip, errors and determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pramloc.config import RecognizerConfig
from pramloc.errors import PramlocError
from pramloc.recognition import Recognizer, TrainingImage
from pramloc.recognition import train as train_mod
from pramloc.recognition.data import augmented_view, check_training_images, split_train_val, visibility_targets

from .conftest import frame

NUM_LANDMARKS = 8
# A small CPU model and a short, fixed-length run (bit-exact reproducible).
SMALL = {"width": 64, "layers": 2, "heads": 2, "train_keypoints": [64, 192], "max_keypoints": 512,
         "batch_size": 4, "epochs": 30, "val_fraction": 0.25, "val_every": 1, "patience": None,
         "lr": 3e-3, "warmup_steps": 10, "train_minutes": 2, "num_threads": 1, "seed": 0}


@pytest.fixture(scope="module")
def kitchen_labelled(tmp_path_factory, kitchen_root):
    """16 real map images (every 6th frame), SIFT (512 per image), labelled by the map
    builder: triangulated with the GT poses, points clustered into 8 landmarks."""
    from pramloc import landmarks, sfm
    from pramloc import features as features_mod
    from pramloc.config import load_config
    from pramloc.datasets import load_dataset
    from pramloc.io import read_features
    from pramloc.recognition import supervision

    work = tmp_path_factory.mktemp("recognition")
    split = work / "split.txt"
    split.write_text("".join(frame(i) + "\n" for i in range(0, 96, 6)))
    conf = load_config("indoor", ["features.max_keypoints=512", f"landmarks.num_landmarks={NUM_LANDMARKS}",
                                  "landmarks.min_points_per_landmark=10", "triangulation.num_pairs=5"])
    scene = load_dataset("7scenes", kitchen_root, split)
    feat_path = features_mod.main(conf.features, scene.image_dir, scene.names, work / "features.h5")
    rec = sfm.triangulate(scene, feat_path, work / "sfm", conf.triangulation)
    feats = [read_features(feat_path, n) for n in scene.names]
    seg = landmarks.build(rec, scene.names, [f["descriptors"] for f in feats], conf.landmarks.to_dict())
    assert len(seg.centers) == NUM_LANDMARKS
    sup = supervision.training_labels(seg.tracks.xyz, seg.landmark, [f["keypoints"] for f in feats],
                                    [im.camera for im in scene.images], [im.pose for im in scene.images])
    images = supervision.training_images(feats, scene.names, sup)
    by_obs = [np.zeros(len(f["keypoints"]), np.int64) for f in feats]  # observed keypoints: their point's landmark
    for i, k, p in zip(seg.tracks.obs_image, seg.tracks.obs_kp, seg.tracks.obs_point):
        by_obs[i][k] = seg.landmark[p] + 1
    return images, by_obs, seg, scene


@pytest.fixture(scope="module")
def kitchen_images(kitchen_labelled) -> list[TrainingImage]:
    return kitchen_labelled[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, kitchen_labelled):
    path = tmp_path_factory.mktemp("recognizer") / "recognizer.pt"
    metrics = train_mod.main(SMALL, kitchen_labelled[0], NUM_LANDMARKS, path)
    return metrics, path


def test_training_labels(kitchen_labelled):
    """Every keypoint within 3 px of a visible map point takes the landmark of the nearest
    one (the query ground-truth rule); most observed keypoints keep their own point's
    landmark, and untriangulated keypoints on the landmarks are labelled too."""
    from pramloc.landmarks import visible_points

    images, by_obs, seg, scene = kitchen_labelled
    agree = observed = added = 0
    for im, obs, rec in zip(images, by_obs, scene.images):
        uv, lm = visible_points(rec.camera, rec.pose, seg.tracks.xyz, seg.landmark)
        d = np.linalg.norm(im.keypoints[:, None].astype(np.float64) - uv[None], axis=2)  # brute force
        expected = np.where(d.min(1) <= 3.0, lm[d.argmin(1)] + 1, 0)
        assert np.mean(im.labels == expected) > 0.999  # (ties at equal distance aside)
        agree += int((im.labels[obs > 0] == obs[obs > 0]).sum())
        observed += int((obs > 0).sum())
        added += int(((obs == 0) & (im.labels > 0)).sum())
    assert agree > 0.6 * observed, agree / observed
    assert added > 0.2 * observed
    # The visible points (visibility-head targets) lie in the image.
    for im in images:
        assert len(im.points_xy) == len(im.points_landmark) > 0
        w, h = im.image_size
        assert np.all((im.points_xy >= 0) & (im.points_xy < [w, h]))


def held_out(images: list[TrainingImage]) -> list[TrainingImage]:
    return split_train_val(images, SMALL["val_fraction"], SMALL["seed"])[1]


def test_training_image_validation(kitchen_images):
    im = kitchen_images[0]
    assert im.keypoints.dtype == np.float32 and im.labels.dtype == np.int64 and im.image_size == (640, 480)
    assert im.labels.max() <= NUM_LANDMARKS and (im.labels > 0).any() and (im.labels == 0).any()
    kp, desc, lab = im.keypoints, im.descriptors, im.labels
    with pytest.raises(PramlocError, match=r"'bad'.*keypoints must have shape \(N, 2\)"):
        TrainingImage("bad", np.zeros((len(kp), 3)), desc, lab, (640, 480))
    with pytest.raises(PramlocError, match="descriptors must have shape"):
        TrainingImage("bad", kp, desc[:-1], lab, (640, 480))
    with pytest.raises(PramlocError, match="labels have shape"):
        TrainingImage("bad", kp, desc, lab[:-1], (640, 480))
    with pytest.raises(PramlocError, match="labels must be integers"):
        TrainingImage("bad", kp, desc, lab.astype(np.float32), (640, 480))
    with pytest.raises(PramlocError, match="negative label"):
        TrainingImage("bad", kp, desc, lab - 1, (640, 480))
    with pytest.raises(PramlocError, match="image_size"):
        TrainingImage("bad", kp, desc, lab, (640, 0))
    with pytest.raises(PramlocError, match="out of range for 4 landmarks"):
        check_training_images(kitchen_images, 4)
    with pytest.raises(PramlocError, match="all background"):
        check_training_images([TrainingImage("bg", kp, desc, np.zeros_like(lab), (640, 480))], NUM_LANDMARKS)
    with pytest.raises(PramlocError, match="no training images"):
        train_mod.main(SMALL, [], NUM_LANDMARKS, "/tmp/never-written.pt")


def test_augmented_view_keeps_labels(kitchen_images):
    im = kitchen_images[3]
    rng = np.random.default_rng(0)
    conf = {**RecognizerConfig().augment, "jitter": 0.0, "descriptor_noise": 0.0,
            "min_keypoints": 64, "max_keypoints": 256}
    source = {d.tobytes(): label for d, label in zip(im.descriptors, im.labels)}
    for _ in range(5):
        v = augmented_view(im, rng, conf, num_keypoints=200)
        assert 64 <= len(v.xy) <= 200 and v.xy.shape == (len(v.labels), 2)
        assert np.all(np.abs(v.xy) <= 1.0)  # cropped to the frame (long side = [-1, 1])
        assert all(source[d.tobytes()] == label for d, label in zip(v.descriptors, v.labels))
    noisy = augmented_view(im, rng, {**conf, "descriptor_noise": 0.05})
    assert np.allclose(np.linalg.norm(noisy.descriptors, axis=1), 1, atol=1e-5) and noisy.descriptors.min() >= 0
    # Visibility targets follow the crop: a zoom-in keeps fewer visible points, the identity all.
    still = {**conf, "scale": 0.0, "rotation": 0.0, "aspect": 0.0, "shift": 0.0}
    assert np.array_equal(augmented_view(im, rng, still).point_landmarks, im.points_landmark)
    zoom = augmented_view(im, rng, {**still, "scale": 1e-9, "shift": 0.0, "min_keypoints": 1}, num_keypoints=50)
    assert len(zoom.point_landmarks) == len(im.points_landmark)
    crop = augmented_view(im, np.random.default_rng(1), {**still, "shift": 0.5, "min_keypoints": 1})
    assert 0 < len(crop.point_landmarks) < len(im.points_landmark)
    shares, valid = visibility_targets([crop, augmented_view(im, rng, still)], NUM_LANDMARKS)
    assert shares.shape == (2, NUM_LANDMARKS) and bool(valid.all()) and torch.allclose(shares.sum(1), torch.ones(2))


def test_training_learns_real_landmarks(trained, kitchen_images):
    metrics, path = trained
    assert path.is_file() and metrics["epochs"] == SMALL["epochs"] and metrics["stop_reason"] == "epochs"
    assert metrics["num_train_images"] == 12 and metrics["num_val_images"] == 4
    history = metrics["history"]
    assert history[-1]["train_loss"] < 0.8 * history[0]["train_loss"]
    # Held-out images: better than always answering the most frequent landmark.
    train, val = split_train_val(kitchen_images, SMALL["val_fraction"], SMALL["seed"])
    counts = np.bincount(np.concatenate([im.labels[im.labels > 0] for im in train]), minlength=NUM_LANDMARKS + 1)
    val_labels = np.concatenate([im.labels[im.labels > 0] for im in val])
    chance = float(np.mean(val_labels == counts.argmax()))
    assert metrics["val_keypoint_accuracy"] > max(2 * chance, 0.4), (metrics["val_keypoint_accuracy"], chance)
    assert metrics["val_top1_precision"] >= 0.75
    recognizer = Recognizer.load(path)
    assert recognizer.num_landmarks == NUM_LANDMARKS
    assert recognizer.model.num_parameters() == metrics["num_parameters"]
    assert recognizer.metrics["val_keypoint_accuracy"] == metrics["val_keypoint_accuracy"]


def test_reload_gives_identical_outputs(trained, kitchen_images):
    _, path = trained
    a, b = Recognizer.load(path), Recognizer.load(path)
    images = held_out(kitchen_images)
    im = images[0]
    ra = a.recognize(im.keypoints, im.descriptors, im.image_size, return_probs=True)
    rb = b.recognize(im.keypoints, im.descriptors, im.image_size, return_probs=True)
    assert np.array_equal(ra.labels, rb.labels) and np.array_equal(ra.probs, rb.probs)
    assert ra.labels.shape == (len(im),) and ra.probs.shape == (len(im), NUM_LANDMARKS + 1)
    assert np.allclose(ra.probs.sum(1), 1, atol=1e-5) and np.allclose(ra.confidence, ra.probs.max(1))
    # Votes: per landmark, the summed confidence of its keypoints; ranked by votes.
    for lm in range(NUM_LANDMARKS):
        assert ra.votes[lm] == pytest.approx(ra.confidence[ra.labels == lm + 1].sum(), rel=1e-5, abs=1e-6)
    # Landmarks ranked by the visibility head (shares summing to 1), those with votes only.
    assert np.allclose(ra.visibility.sum(), 1, atol=1e-5)
    ranked = ra.ranked()
    assert len(ranked) and np.all(np.diff(ra.visibility[ranked]) <= 0) and np.all(ra.votes[ranked] > 0)
    assert set(ranked) == set(np.nonzero(ra.votes > 0)[0])
    # The batched (padded) form agrees with one image at a time.
    items = [(x.keypoints[: 300 + 50 * i], x.descriptors[: 300 + 50 * i], x.image_size) for i, x in enumerate(images)]
    for (kp, desc, size), rr in zip(items, a.recognize_batch(items)):
        single = a.recognize(kp, desc, size)
        assert np.mean(single.labels == rr.labels) > 0.99
        assert np.allclose(single.confidence, rr.confidence, atol=1e-4)
        assert np.allclose(single.visibility, rr.visibility, atol=1e-4)


def test_candidate_landmarks_cap(trained, kitchen_images):
    """On maps with more landmarks than ``max_candidates`` the keypoints are classified over
    the landmarks the visibility head ranks first: each label is the best of those classes,
    the probabilities are a softmax over them, and the visibility is untouched."""
    _, path = trained
    full, capped = Recognizer.load(path), Recognizer.load(path)
    capped.max_candidates = 3
    im = held_out(kitchen_images)[0]
    rf = full.recognize(im.keypoints, im.descriptors, im.image_size, return_probs=True)
    rc = capped.recognize(im.keypoints, im.descriptors, im.image_size, return_probs=True)
    top = np.argsort(-rf.visibility, kind="stable")[:3]
    classes = np.r_[0, np.sort(top) + 1]
    assert np.allclose(rc.visibility, rf.visibility)
    assert set(np.unique(rc.labels)) <= set(classes.tolist())
    # The same logits, renormalised over the candidate classes.
    sub = rf.probs[:, classes] / rf.probs[:, classes].sum(1, keepdims=True)
    assert np.array_equal(rc.labels, classes[sub.argmax(1)])
    assert np.allclose(rc.probs[:, classes], sub, atol=1e-5) and np.all(np.delete(rc.probs, classes, 1) == 0)
    assert np.all(rc.votes[np.setdiff1d(np.arange(NUM_LANDMARKS), top)] == 0)
    # The landmark seen most is among the candidates and keeps the top rank.
    assert rc.ranked()[0] == rf.ranked()[0]
    # A cap at or above the number of landmarks changes nothing.
    capped.max_candidates = NUM_LANDMARKS
    same = capped.recognize(im.keypoints, im.descriptors, im.image_size, return_probs=True)
    assert np.array_equal(same.labels, rf.labels) and np.array_equal(same.probs, rf.probs)


def test_empty_and_bad_inputs(trained):
    rec = Recognizer.load(trained[1])
    empty = rec.recognize(np.zeros((0, 2)), np.zeros((0, 128)), (640, 480))
    assert empty.labels.shape == (0,) and empty.votes.shape == (NUM_LANDMARKS,) and len(empty.ranked()) == 0
    kp, desc = np.full((10, 2), 100.0), np.full((10, 128), 128 ** -0.5)
    with pytest.raises(PramlocError, match=r"keypoints must have shape \(N, 2\), got \(10, 3\)"):
        rec.recognize(np.zeros((10, 3)), desc, (640, 480))
    with pytest.raises(PramlocError, match="N = 10 keypoints, got \\(9, 128\\)"):
        rec.recognize(kp, desc[:9], (640, 480))
    with pytest.raises(PramlocError, match="dimension 64, the recognizer expects 128"):
        rec.recognize(kp, desc[:, :64], (640, 480))
    with pytest.raises(PramlocError, match="image_size must be"):
        rec.recognize(kp, desc, (640,))
    with pytest.raises(PramlocError, match="NaN"):
        rec.recognize(np.where(np.eye(10, 2) > 0, np.nan, kp), desc, (640, 480))
    with pytest.raises(PramlocError, match="input 1"):
        rec.recognize_batch([(kp, desc, (640, 480)), (kp, desc[:, :5], (640, 480))])


def test_checkpoint_errors(tmp_path, trained):
    missing = tmp_path / "nope.pt"
    with pytest.raises(PramlocError, match=f"{missing}: recognizer checkpoint not found"):
        Recognizer.load(missing)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(trained[1].read_bytes()[:5000])
    with pytest.raises(PramlocError, match=f"{corrupt}: cannot read recognizer checkpoint"):
        Recognizer.load(corrupt)
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, other)
    with pytest.raises(PramlocError, match=f"{other}: not a pramloc recognizer checkpoint"):
        Recognizer.load(other)


def test_same_seed_same_weights(tmp_path, kitchen_images):
    conf = {**SMALL, "epochs": 2}
    paths = [tmp_path / f"{i}.pt" for i in range(3)]
    m0 = train_mod.main(conf, kitchen_images, NUM_LANDMARKS, paths[0])
    m1 = train_mod.main(conf, kitchen_images, NUM_LANDMARKS, paths[1])
    train_mod.main({**conf, "seed": 1}, kitchen_images, NUM_LANDMARKS, paths[2])
    s0, s1, s2 = (torch.load(p, weights_only=True)["state_dict"] for p in paths)
    assert all(torch.equal(s0[k], s1[k]) for k in s0)
    assert not all(torch.equal(s0[k], s2[k]) for k in s0)
    assert m0["val_loss"] == m1["val_loss"] and m0["history"] == m1["history"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_training_loads_on_cpu(tmp_path, kitchen_images):
    path = tmp_path / "cuda.pt"
    metrics = train_mod.main({**SMALL, "epochs": 2}, kitchen_images, NUM_LANDMARKS, path, device="cuda")
    assert metrics["device"].startswith("cuda")
    im = kitchen_images[0]
    assert Recognizer.load(path).recognize(im.keypoints, im.descriptors, im.image_size).labels.shape == (len(im),)


def test_projected_labels_occlusion_and_radius():
    """Synthetic camera: a nearer point hides a farther one in the same cell; keypoints take
    the landmark of a visible point within the radius, else background."""
    from pramloc.geometry import Camera, Pose
    from pramloc.landmarks import projected_labels, visible_points

    cam = Camera.from_string("PINHOLE 64 48 50 50 32 24")
    pose = Pose(np.array([1.0, 0, 0, 0]), np.zeros(3))  # identity: camera at the origin, looking +z
    xyz = np.array([[0, 0, 1.0], [0, 0, 2.0], [0.4, 0.2, 1.0], [0, 0, -1.0]])  # 2nd hidden, 4th behind
    landmark = np.array([0, 1, 2, 1])
    uv, lm = visible_points(cam, pose, xyz, landmark)
    assert sorted(lm.tolist()) == [0, 2]
    kps = uv[np.argsort(lm)] + [[1.0, 1.0], [5.0, 0.0]]  # 1.4 px and 5 px away
    labels, counts = projected_labels(cam, pose, xyz, landmark, kps, 3)
    assert labels.tolist() == [1, 0] and counts.tolist() == [1, 0, 1]


def test_default_threads_counts_the_idle_cores(monkeypatch):
    """All cores idle: one thread per core (at most 8); all busy: one thread."""
    import os

    cores = len(os.sched_getaffinity(0))
    for idle, expected in ((100.0, max(1, min(8, cores))), (0.0, 1)):
        samples = iter([(0.0, 0.0), (idle, 100.0)])  # (idle, total) jiffies before and after
        monkeypatch.setattr(train_mod, "_cpu_times", lambda: next(samples))
        assert train_mod.default_threads(0.0) == expected


def test_time_limited_training_says_so(tmp_path, kitchen_images):
    """The hard time limit ends training before its step budget, and the record says so."""
    conf = {**SMALL, "epochs": None, "min_steps": 100_000, "train_minutes": 0.05, "val_every": 2}
    metrics = train_mod.main(conf, kitchen_images, NUM_LANDMARKS, tmp_path / "r.pt")
    assert metrics["stop_reason"] == "time limit" and metrics["seconds"] < 0.05 * 60 + 10
    assert metrics["steps"] < 100_000 <= metrics["step_budget"]


def test_step_budget_grows_with_the_map():
    """Without fixed epochs the budget is steps_per_image per training image, at least min_steps
    (in whole epochs); fixed epochs override it."""
    from pramloc.config import RecognizerConfig

    conf = RecognizerConfig(steps_per_image=16, min_steps=1500, batch_size=8)
    assert train_mod.step_budget(conf, 12, 2) * 2 == 1500  # small map: the minimum
    assert train_mod.step_budget(conf, 150, 19) * 19 >= 2400 > (train_mod.step_budget(conf, 150, 19) - 1) * 19
    assert train_mod.step_budget(conf, 1000, 125) * 125 == 16000
    assert train_mod.step_budget(RecognizerConfig(epochs=7), 1000, 125) == 7


def test_step_budget_ends_training_reproducibly(tmp_path, kitchen_images):
    """A run ended by its step budget says so, and two runs give the same weights."""
    import torch

    conf = {**SMALL, "epochs": None, "min_steps": 12, "steps_per_image": 0.0}
    a = train_mod.main(conf, kitchen_images, NUM_LANDMARKS, tmp_path / "a.pt")
    b = train_mod.main(conf, kitchen_images, NUM_LANDMARKS, tmp_path / "b.pt")
    assert a["stop_reason"] == "step budget" and a["steps"] == a["step_budget"] >= 12
    wa, wb = (torch.load(tmp_path / f, weights_only=False)["state_dict"] for f in ("a.pt", "b.pt"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_training_stops_when_validation_stops_improving(tmp_path, kitchen_images):
    """With a demanding min_improvement, patience ends the run long before its budget."""
    conf = {**SMALL, "epochs": None, "min_steps": 10_000, "patience": 6, "min_improvement": 0.5, "val_every": 1}
    metrics = train_mod.main(conf, kitchen_images, NUM_LANDMARKS, tmp_path / "r.pt")
    assert metrics["stop_reason"] == "no improvement" and metrics["steps"] < 100


def test_training_log_names_no_staging_path(tmp_path, kitchen_images, caplog):
    """The checkpoint is written inside the map's staging folder, renamed when the map is
    complete: no log line names that soon-gone path."""
    import logging

    from pramloc import logger

    path = tmp_path / ".map.tmp-123" / "recognizer.pt"
    path.parent.mkdir()
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO, logger="pramloc"):
            train_mod.main({**SMALL, "epochs": 2}, kitchen_images, NUM_LANDMARKS, path)
    finally:
        logger.removeHandler(caplog.handler)
    assert any("Recognizer: stopped by" in m for m in caplog.messages)
    assert not any(".tmp-" in m for m in caplog.messages), caplog.messages
