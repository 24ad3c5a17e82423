"""Robustness on bad inputs, interrupted builds and concurrent use, with real data.

Bad inputs give one clear :class:`PramlocError` naming the file and the problem, and a bad
query in a batch is a per-query failure while the others are localized.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from pramloc import features, mapio
from pramloc.config import load_config
from pramloc.datasets import load_dataset, load_images
from pramloc.datasets.colmap import load_colmap
from pramloc.datasets.sevenscenes import read_matrix_pose
from pramloc.errors import PramlocError
from pramloc.geometry import Camera
from pramloc.io import read_image_list, read_poses, read_query_list
from pramloc.io.colmap import check_binary_model, read_colmap_model

from .conftest import frame

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-c", "from pramloc.cli import main; main()"]
ENV = {**os.environ, "GLOG_minloglevel": "2",
       "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
KITCHEN_CAMERA = "PINHOLE 640 480 525 525 320 240"
INDOOR = load_config("indoor").features


def one_line_error(excinfo, *words):
    msg = str(excinfo.value)
    assert "\n" not in msg and all(w in msg for w in words), msg
    return msg


# ------------------------------------------------------------------ images

def test_truncated_empty_and_corrupt_images(kitchen_root, tmp_path):
    data = (kitchen_root / frame(0)).read_bytes()
    # cv2 (OpenCV 5) refuses a JPEG cut at 30 %; it must be a clean error either way.
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[: int(len(data) * 0.3)])
    decoded = cv2.imdecode(np.frombuffer(cut.read_bytes(), np.uint8), cv2.IMREAD_GRAYSCALE)
    if decoded is None:
        with pytest.raises(PramlocError) as e:
            features.extract_path(cut, INDOOR)
        one_line_error(e, "cut.jpg", "cannot decode image")
    else:  # a decoder that returns the partial image: a normal (grey-padded) image
        assert features.extract_path(cut, INDOOR)["keypoints"].ndim == 2
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(PramlocError) as e:
        features.read_image(empty)
    one_line_error(e, "empty.jpg", "empty")
    with pytest.raises(PramlocError) as e:
        features.load_image(tmp_path / "missing.jpg")
    one_line_error(e, "missing.jpg", "not found")
    # A PNG header followed by garbage, and a JPEG header followed by garbage.
    for name, head in (("bad.png", b"\x89PNG\r\n\x1a\n"), ("bad2.jpg", b"\xff\xd8\xff\xe0")):
        (tmp_path / name).write_bytes(head + bytes(range(256)) * 4)
        with pytest.raises(PramlocError) as e:
            features.extract_path(tmp_path / name, INDOOR)
        one_line_error(e, name, "cannot decode")


def test_bad_queries_fail_one_by_one_in_a_batch(kitchen_map, kitchen_root, tmp_path):
    """A batch with a truncated JPEG, an empty file, a texture-less image and a missing file
    between two real queries: the real ones are localized, each bad one is logged with its
    reason, nothing raises."""
    from pramloc.localize import main as localize_main

    data = (kitchen_root / frame(3)).read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: int(len(data) * 0.3)])
    (tmp_path / "empty.jpg").write_bytes(b"")
    cv2.imwrite(str(tmp_path / "flat.png"), np.full((480, 640), 128, np.uint8))
    cam = Camera.from_string(KITCHEN_CAMERA)
    queries = [(frame(3), kitchen_root / frame(3), cam)]
    queries += [(n, tmp_path / n, cam) for n in ("cut.jpg", "empty.jpg", "flat.png", "missing.jpg")]
    queries += [(frame(9), kitchen_root / frame(9), cam)]
    out = tmp_path / "results.txt"
    summary = localize_main(kitchen_map, queries, out, mode="retrieval")
    assert summary["failed"] == 4 and summary["retrieval"] == 2
    assert set(read_poses(out)) == {frame(3), frame(9)}
    log = {r["name"]: r for r in map(json.loads, (tmp_path / "results_log.jsonl").read_text().splitlines())}
    assert log["cut.jpg"]["path"] == "failed" and "cannot decode" in log["cut.jpg"]["reason"]
    assert "empty" in log["empty.jpg"]["reason"]
    assert log["flat.png"]["reason"].startswith("too few keypoints")
    assert "not found" in log["missing.jpg"]["reason"]


def _peak_rss_script(path: Path, max_side: int) -> str:
    """Peak memory (VmHWM, reset between the steps) of extract_path, and of the same
    extraction from a full decode, in a fresh process (ru_maxrss would carry the parent's
    peak over exec)."""
    return f"""
import json, re
from pramloc import features

def status(key):
    return int(re.search(key + r":\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)) / 1024

def reset_peak():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")

conf = {{"name": "sift", "max_side": {max_side}, "max_keypoints": 2048, "root_sift": True}}
features.extract_path({str(path)!r}, conf)  # warm-up: libraries, SIFT buffers
base = status("VmRSS")
reset_peak()
f = features.extract_path({str(path)!r}, conf)
reduced = status("VmHWM") - base
base = status("VmRSS")
reset_peak()
features.extract_image(features.read_image({str(path)!r}), conf)
full = status("VmHWM") - base
print(json.dumps({{"reduced_mb": reduced, "full_decode_mb": full,
                  "size": f["image_size"].tolist(), "kp": f["keypoints"].tolist()}}))
"""


def test_huge_image_is_decoded_small(kitchen_root, tmp_path):
    """A 12000x9000 JPEG (a real frame upscaled) is decoded at 1/8 by libjpeg: extraction
    takes about 60 MB at its peak (SIFT at 640 px, most of it) instead of about 215 MB from
    a full decode, and keypoints come out in the original pixel frame (they match those of
    the 640x480 frame, scaled by 18.75)."""
    img = cv2.imread(str(kitchen_root / frame(0)))
    huge = tmp_path / "huge.jpg"
    cv2.imwrite(str(huge), cv2.resize(img, (12000, 9000), interpolation=cv2.INTER_CUBIC),
                [cv2.IMWRITE_JPEG_QUALITY, 90])
    del img
    assert features.decode_factor((12000, 9000), 640) == 8
    assert features.decode_factor((640, 480), 640) == 1 and features.decode_factor((3072, 2048), 1024) == 1
    res = subprocess.run([sys.executable, "-c", _peak_rss_script(huge, 640)], capture_output=True, text=True,
                         env=ENV, timeout=120)
    assert res.returncode == 0, res.stderr
    r = json.loads(res.stdout)
    assert r["size"] == [12000, 9000]
    assert r["full_decode_mb"] > 150, r  # the grey image alone is 108 MB
    assert r["reduced_mb"] < 100 and r["reduced_mb"] < r["full_decode_mb"] / 2, r
    # Same keypoints as the 640x480 original, in the 12000x9000 frame.
    small = features.extract_path(kitchen_root / frame(0), INDOOR)
    kp = (np.array(r["kp"]) + 0.5) / 18.75 - 0.5
    d = np.linalg.norm(kp[:, None] - small["keypoints"][None], axis=2).min(1)
    assert np.median(d) < 0.5, np.median(d)


def test_reduced_decoding_matches_full_decoding(strecha_root):
    """On a real 3072x2048 photo decoded at 1/2 (max_side 640), the keypoints agree with
    those of the full decoding to a tenth of a pixel (no offset from the reduction)."""
    from pramloc.matching import match

    conf = {**INDOOR.to_dict(), "max_side": 640}
    path = strecha_root / "images/0000.jpg"
    assert features.load_image(path, 640)[0].shape == (1024, 1536)
    a = features.extract_path(path, conf)
    b = features.extract_image(features.read_image(path), conf)
    assert a["image_size"].tolist() == b["image_size"].tolist() == [3072, 2048]
    m = np.asarray(match(a["descriptors"], b["descriptors"], ratio=0.8, mutual=True)[0])
    assert len(m) > 0.5 * len(a["keypoints"])
    diff = a["keypoints"][m[:, 0]] - b["keypoints"][m[:, 1]]
    assert np.median(np.linalg.norm(diff, axis=1)) < 0.5 and np.abs(diff.mean(0)).max() < 0.1


def test_grey_rgba_and_16bit_png(kitchen_root, tmp_path):
    grey = features.read_image(kitchen_root / frame(0))
    rgb = features.read_image(kitchen_root / frame(0), grayscale=False)
    cv2.imwrite(str(tmp_path / "grey.png"), grey)
    cv2.imwrite(str(tmp_path / "rgba.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGRA))
    cv2.imwrite(str(tmp_path / "deep.png"), grey.astype(np.uint16) * 257)
    ref = features.extract_path(kitchen_root / frame(0), INDOOR)
    from_rgb = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)  # a JPEG's grey is its luma, close to this
    for name, expected in (("grey.png", grey), ("rgba.png", from_rgb), ("deep.png", grey)):
        im = features.read_image(tmp_path / name)
        assert im.shape == (480, 640) and im.dtype == np.uint8, name
        assert np.abs(im.astype(int) - expected).max() <= 1, name
        f = features.extract_path(tmp_path / name, INDOOR)
        assert abs(len(f["keypoints"]) - len(ref["keypoints"])) < 0.05 * len(ref["keypoints"]), name
    assert features.read_image(tmp_path / "rgba.png", grayscale=False).shape == (480, 640, 3)
    # Arrays given directly: RGB is converted, other types are refused with a clear error.
    assert np.array_equal(features.extract_image(rgb, INDOOR)["keypoints"],
                          features.extract_image(from_rgb, INDOOR)["keypoints"])
    with pytest.raises(PramlocError, match="uint8"):
        features.extract_image(grey.astype(np.float64), INDOOR)


def test_exif_rotated_photo(kitchen_map, kitchen_root, tmp_path):
    """A photo stored sideways with EXIF Orientation=6 is read as displayed (640x480), and
    localizes with the intrinsics of the displayed image."""
    from PIL import Image

    from pramloc.localize import Localizer

    rgb = features.read_image(kitchen_root / frame(3), grayscale=False)
    stored = np.ascontiguousarray(np.rot90(rgb, 1))  # 480 wide, 640 high on disk
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = tmp_path / "sideways.jpg"
    Image.fromarray(stored).save(path, quality=95, exif=exif.tobytes())
    raw = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE | cv2.IMREAD_IGNORE_ORIENTATION)
    assert raw.shape == (640, 480)
    im = features.read_image(path)
    assert im.shape == (480, 640)
    assert np.abs(im.astype(int) - features.read_image(kitchen_root / frame(3))).mean() < 3
    assert features.load_image(path, 640)[1] == (640, 480)
    loc = Localizer(kitchen_map, mode="retrieval")
    cam = Camera.from_string(KITCHEN_CAMERA)
    r = loc.localize(path, cam)
    ref = loc.localize(kitchen_root / frame(3), cam)
    gt = load_dataset("7scenes", kitchen_root)[frame(3)].pose
    assert r.pose is not None, r.reason
    assert np.linalg.norm(r.pose.center - gt.center) < 0.05
    assert np.linalg.norm(r.pose.center - ref.pose.center) < 0.03


def test_odd_file_names(kitchen_map, kitchen_root, tmp_path, caplog):
    """Names with spaces work everywhere; a name that is not UTF-8 can be read as a single
    image, and is skipped (with a warning) when a folder is listed."""
    from pramloc.localize import main as localize_main
    from pramloc.localize import query_list

    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(kitchen_root / frame(3), images / "my photo 1.jpg")
    shutil.copy(kitchen_root / frame(9), images / "second shot.jpg")
    latin1 = Path(os.fsdecode(str(images).encode() + b"/caf\xe9.jpg"))
    shutil.copy(kitchen_root / frame(15), latin1)
    assert features.read_image(latin1).shape == (480, 640)
    logger = logging.getLogger("pramloc")  # does not propagate to the root logger
    logger.addHandler(caplog.handler)
    try:
        scene = load_images(images)
    finally:
        logger.removeHandler(caplog.handler)
    assert scene.names == ["my photo 1.jpg", "second shot.jpg"]
    assert "not valid UTF-8" in caplog.text
    qlist = tmp_path / "queries.txt"
    qlist.write_text(f"my photo 1.jpg {KITCHEN_CAMERA}\nsecond shot.jpg\n")
    queries = query_list(images=images, queries=qlist, camera=Camera.from_string(KITCHEN_CAMERA))
    out = tmp_path / "results.txt"
    assert localize_main(kitchen_map, queries, out, mode="retrieval")["failed"] == 0
    assert set(read_poses(out)) == {"my photo 1.jpg", "second shot.jpg"}


# ------------------------------------------------------------------ text files

def test_text_inputs(tmp_path, kitchen_root):
    p = tmp_path / "list.txt"
    p.write_text("a.jpg\nb.jpg\na.jpg\n")
    with pytest.raises(PramlocError) as e:
        read_image_list(p)
    one_line_error(e, "list.txt", "'a.jpg'", "twice")
    p.write_text(f"{frame(0)}\n{frame(6)}\n{frame(0)}\n")
    with pytest.raises(PramlocError, match="listed twice"):
        load_dataset("7scenes", kitchen_root, p)
    q = tmp_path / "queries.txt"
    q.write_text(f"x.jpg {KITCHEN_CAMERA}\nx.jpg {KITCHEN_CAMERA}\n")
    with pytest.raises(PramlocError) as e:
        read_query_list(q)
    one_line_error(e, "queries.txt:2", "appears twice")
    q.write_text("x.jpg PINHOLE 640 480 525 525 320 240 7\n")  # one value too many
    with pytest.raises(PramlocError) as e:
        read_query_list(q)
    one_line_error(e, "queries.txt:1", "needs 4 parameters, got 5")
    q.write_text(f"PINHOLE shot.jpg {KITCHEN_CAMERA}\n")  # a model's name inside the image name
    assert list(read_query_list(q)) == ["PINHOLE shot.jpg"]
    for bad, what in (("nan", "NaN"), ("inf", "NaN or infinite"), ("1e999", "NaN or infinite"), ("x", "non-numeric")):
        r = tmp_path / "poses.txt"
        r.write_text(f"a.jpg 1 0 0 0 0 0 0\nb.jpg 1 0 0 0 {bad} 0 0\n")
        with pytest.raises(PramlocError) as e:
            read_poses(r)
        one_line_error(e, "poses.txt:2", what)
    m = tmp_path / "frame.pose.txt"
    m.write_text("1 0 0 0\n0 1 0 0\n0 0 nan 0\n0 0 0 1\n")
    with pytest.raises(PramlocError) as e:
        read_matrix_pose(m)
    one_line_error(e, "frame.pose.txt:3", "NaN")
    m.write_text("2 0 0 0\n0 1 0 0\n0 0 1 0\n0 0 0 1\n")
    with pytest.raises(PramlocError) as e:
        read_matrix_pose(m)
    one_line_error(e, "frame.pose.txt", "not a rotation")


def test_results_file_with_garbage(kitchen_root, tmp_path):
    from pramloc.evaluate import load_ground_truth, read_results

    gt, _ = load_ground_truth("7scenes", kitchen_root, queries=kitchen_root / "splits/interleaved_query.txt")
    good = f"{frame(3)} 1 0 0 0 0 0 0\n"
    for garbage, where in (("\x00\x01\x02 garbage\n", ":2:"), ("half a line 1 2\n", ":2:"),
                           (f"{frame(9)} 0 0 0 0 0 0 0\n", "quaternion is zero"),
                           ("rgb/unknown.jpg 1 0 0 0 0 0 0\n", "not in the ground truth")):
        r = tmp_path / "results.txt"
        r.write_text(good + garbage)
        with pytest.raises(PramlocError) as e:
            read_results(r, gt)
        one_line_error(e, "results.txt", where)
    r.write_bytes(good.encode() + b"caf\xe9 1 0 0 0 0 0 0\n")
    with pytest.raises(PramlocError, match="not a UTF-8 text file"):
        read_results(r, gt)


# ------------------------------------------------------------------ COLMAP models

def _model(strecha_root, tmp_path, name="model") -> Path:
    model = tmp_path / name
    shutil.copytree(strecha_root / "gt_colmap_text", model)
    return model


def test_colmap_text_model_errors(strecha_root, tmp_path):
    """What pycolmap would accept silently (or report obscurely) is a clear error here."""
    images = strecha_root / "images"
    line0 = "1 0.440977962 -0.508320698 -0.561956162 -0.480992490 5.547783821 -10.148366280 0.087859058 1 0000.jpg"
    cases = {
        # camera 1 referenced by image 0000.jpg but missing (pycolmap: "Rig with ID 1 does not exist")
        "cameras.txt:3": ("cameras.txt", lambda t: t.replace("1 PINHOLE 3072", "# removed", 1),
                          "images.txt:4: image '0000.jpg' refers to camera 1, which is not in cameras.txt"),
        # pycolmap reads the negative width as 2^64 - 3072
        "negative": ("cameras.txt", lambda t: t.replace("1 PINHOLE 3072", "1 PINHOLE -3072", 1), "invalid image size"),
        "params": ("cameras.txt", lambda t: t.replace("1520.69 1006.81\n", "1520.69\n", 1), "needs 4 parameters, got 3"),
        # pycolmap turns a zero quaternion into a pose
        "zero": ("images.txt", lambda t: t.replace(line0, "1 0 0 0 0 1 2 3 1 0000.jpg"), "quaternion is zero"),
        # pycolmap silently drops every other image without the (empty) POINTS2D lines
        "blank": ("images.txt", lambda t: t.replace("\n\n", "\n"), "malformed POINTS2D line"),
        # pycolmap keeps both images
        "dup": ("images.txt", lambda t: t.replace("0001.jpg", "0000.jpg"), "image name '0000.jpg' appears twice"),
        # pycolmap cuts the name at the space
        "space": ("images.txt", lambda t: t.replace("0000.jpg", "00 00.jpg"), "contains spaces"),
        "track": ("points3D.txt", lambda t: "1 0 0 0 1 2 3 0.5 1 0\n", "track refers to 2D point 0 of image 1"),
        "binary": ("points3D.txt", lambda t: "\x00\x01", "not a text file"),
    }
    for key, (part, edit, message) in cases.items():
        model = _model(strecha_root, tmp_path, key)
        (model / part).write_text(edit((model / part).read_text()))
        with pytest.raises(PramlocError) as e:
            load_colmap(images, model)
        one_line_error(e, message)
        assert str(model) in str(e.value), key
    # Still accepted: the real model.
    assert len(load_colmap(images, _model(strecha_root, tmp_path)).images) == 25


def test_colmap_binary_model_truncated(strecha_root, tmp_path):
    """pycolmap reads a truncated binary model forever (memory growing without bound); the
    structural check stops every truncation first. The one pycolmap call runs in a
    subprocess with a timeout, so a regression cannot hang the test run."""
    import pycolmap

    rec = pycolmap.Reconstruction(str(strecha_root / "gt_colmap_text"))
    model = tmp_path / "bin"
    model.mkdir()
    rec.write_binary(str(model))
    check_binary_model(model)
    for part in ("cameras.bin", "images.bin", "frames.bin", "rigs.bin", "points3D.bin"):
        data = (model / part).read_bytes()
        for n in sorted({0, 1, 7, len(data) // 3, len(data) // 2, len(data) - 1}):
            bad = tmp_path / f"bad-{part}-{n}"
            shutil.copytree(model, bad)
            (bad / part).write_bytes(data[:n])
            with pytest.raises(PramlocError, match=f"{part}: truncated or corrupt"):
                check_binary_model(bad)
    bad = tmp_path / "bad-points3D.bin-7"
    script = ("from pramloc.io.colmap import read_colmap_model\n"
              "from pramloc.errors import PramlocError\n"
              f"try:\n    read_colmap_model({str(bad)!r})\nexcept PramlocError as e:\n    print(e)\n")
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=ENV, timeout=60)
    assert "points3D.bin: truncated or corrupt COLMAP binary file" in res.stdout, res.stdout + res.stderr
    (model / "images.bin").write_bytes((model / "images.bin").read_bytes() + b"\0\0")
    with pytest.raises(PramlocError, match="images.bin: corrupt COLMAP binary file .2 unexpected bytes"):
        read_colmap_model(model)


# ------------------------------------------------------------------ map folders

def test_damaged_map_folders(kitchen_map, tmp_path):
    def damaged(name, edit):
        m = tmp_path / name
        shutil.copytree(kitchen_map, m)
        edit(m)
        with pytest.raises(PramlocError) as e:
            mapio.load_map(m)
        return str(e.value)

    assert "map part is missing" in damaged("deleted", lambda m: (m / "sfm/points3D.bin").unlink())
    assert "map part is missing" in damaged("no_h5", lambda m: (m / "map.h5").unlink())

    def truncate(m):
        data = (m / "map.h5").read_bytes()
        (m / "map.h5").write_bytes(data[: len(data) // 2])

    assert "truncated or changed" in damaged("truncated", truncate)

    def flip(m):
        data = bytearray((m / "map.h5").read_bytes())
        data[len(data) // 2] ^= 0xFF
        (m / "map.h5").write_bytes(bytes(data))

    assert "checksum mismatch" in damaged("flipped", flip)
    assert "not a pramloc map" in damaged("no_manifest", lambda m: (m / "manifest.json").unlink())
    assert "not valid JSON" in damaged("bad_json", lambda m: (m / "manifest.json").write_text('{"format'))
    assert "not a JSON object" in damaged("json_list", lambda m: (m / "manifest.json").write_text("[1, 2]"))

    def edit_manifest(change):
        def edit(m):
            man = json.loads((m / "manifest.json").read_text())
            change(man)
            (m / "manifest.json").write_text(json.dumps(man))
        return edit

    assert "format version 99" in damaged("version", edit_manifest(lambda d: d.update(format_version=99)))
    assert "bad part name" in damaged("escape", edit_manifest(
        lambda d: d["files"].update({"../../etc/passwd": d["files"]["map.h5"]})))
    assert "bad entry" in damaged("entry", edit_manifest(lambda d: d["files"]["map.h5"].update(bytes="12")))
    assert "differ from the data" in damaged("counts", edit_manifest(lambda d: d["counts"].update(points=5)))
    with pytest.raises(PramlocError, match="map folder not found"):
        mapio.load_map(tmp_path / "nothing")
    file_map = tmp_path / "file"
    file_map.write_text("x")
    with pytest.raises(PramlocError, match="map folder not found"):
        mapio.load_map(file_map)


# ------------------------------------------------------------------ interrupted builds

def _wait_then_kill(proc: subprocess.Popen, ready, timeout: float = 60.0) -> bool:
    """SIGKILL ``proc`` as soon as ``ready()``; False if it finished first."""
    t0 = time.monotonic()
    while proc.poll() is None and time.monotonic() - t0 < timeout:
        if ready():
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.005)
    proc.wait()
    return False


def _fixture_config(kitchen_map: Path, tmp_path: Path) -> tuple[dict, Path]:
    """The configuration the kitchen_map fixture was built with, and as a YAML file."""
    import yaml

    conf = mapio.read_manifest(kitchen_map)["config"]
    path = tmp_path / "fixture.yaml"
    path.write_text(yaml.safe_dump(conf))
    return conf, path


def _same_points(a: mapio.LandmarkMap, b: mapio.LandmarkMap) -> bool:
    return a.xyz.shape == b.xyz.shape and np.array_equal(np.unique(a.xyz, axis=0), np.unique(b.xyz, axis=0))


def test_killed_build_leaves_no_map_and_resumes(kitchen_map, kitchen_root, kitchen_split, tmp_path):
    """SIGKILL during start-up, during feature extraction and while the map folder is being
    written: never a folder at --out that loads; the re-run resumes from the cached stages,
    cleans up after the killed runs, and gives the map of an uninterrupted build."""
    out = tmp_path / "maps/kitchen"
    cache = out.parent / ".kitchen.cache"
    _, config = _fixture_config(kitchen_map, tmp_path)
    args = [*CLI, "build-map", "--dataset", "7scenes", "--root", str(kitchen_root), "--split", str(kitchen_split),
            "--out", str(out), "--no-train", "--config", str(config)]
    t0 = [0.0]
    points = {
        "after 2 s": lambda: time.monotonic() - t0[0] > 2.0,
        "during features": lambda: any(cache.glob("features-*.h5")),
        "while writing the map": lambda: any(out.parent.glob(".kitchen.tmp-*")),
    }
    for what, ready in points.items():
        t0[0] = time.monotonic()
        proc = subprocess.Popen(args, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert _wait_then_kill(proc, ready), f"the build finished before the kill point {what!r}"
        if out.exists():
            with pytest.raises(PramlocError):
                mapio.load_map(out)
    assert not out.exists() and any(out.parent.glob(".kitchen.tmp-*"))
    res = subprocess.run(args, env=ENV, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "features of 0 images (8 cached)" in res.stderr  # resumed
    assert "Reusing the cached sparse model" in res.stderr
    assert sorted(p.name for p in out.parent.iterdir()) == [".kitchen.cache", "kitchen"]  # cleaned up
    resumed, fresh = mapio.load_map(out), mapio.load_map(kitchen_map)
    assert len(resumed.image_names) == 8 and abs(len(resumed.xyz) - len(fresh.xyz)) < 0.1 * len(fresh.xyz)
    assert _same_points(resumed, fresh) and np.array_equal(resumed.point_landmark, fresh.point_landmark)


def test_build_is_deterministic(kitchen_map, kitchen_root, kitchen_split, tmp_path):
    """Two builds of the same small map (same inputs and seeds, separate caches) give the
    same landmarks, points and retrieval vocabulary."""
    from pramloc import build

    conf = load_config(_fixture_config(kitchen_map, tmp_path)[1])
    out = tmp_path / "again/kitchen"
    build.main(conf, load_dataset("7scenes", kitchen_root, kitchen_split), out, train=False)
    a, b = mapio.load_map(out), mapio.load_map(kitchen_map)
    assert np.array_equal(a.point_landmark, b.point_landmark) and np.array_equal(a.xyz, b.xyz)
    assert np.array_equal(a.landmark_centers, b.landmark_centers)
    assert np.array_equal(a.retrieval["vocabulary"], b.retrieval["vocabulary"])


def test_landmarks_do_not_depend_on_point_order(kitchen_map, kitchen_split, tmp_path):
    """pycolmap iterates a model's points in hash-map order, which differs between the
    model triangulated in memory and the same model read back from the build cache: the
    landmarks must not depend on it, else a resumed build differs from a fresh one. Here:
    the fixture's cached model, and the same model with its points3D.txt lines shuffled
    (same ids, other insertion order)."""
    import random

    import pycolmap

    from pramloc import landmarks
    from pramloc.io import read_features

    cache = kitchen_map.parent / f".{kitchen_map.name}.cache"
    rec = pycolmap.Reconstruction(str(next(cache.glob("sfm-*"))))
    text = tmp_path / "model"
    text.mkdir()
    rec.write_text(str(text))
    lines = (text / "points3D.txt").read_text().splitlines(keepends=True)
    body = [line for line in lines if not line.startswith("#")]
    random.Random(0).shuffle(body)
    (text / "points3D.txt").write_text("".join(body))
    shuffled = read_colmap_model(text)
    assert sorted(shuffled.points3D) == sorted(rec.points3D) and list(shuffled.points3D) != list(rec.points3D)
    names = read_image_list(kitchen_split)
    feats = next(cache.glob("features-*.h5"))
    desc = [read_features(feats, n)["descriptors"] for n in names]
    conf = mapio.read_manifest(kitchen_map)["config"]["landmarks"]
    a = landmarks.build(rec, names, desc, conf)
    b = landmarks.build(shuffled, names, desc, conf)
    assert np.array_equal(a.keep, b.keep) and np.array_equal(a.centers, b.centers)


def test_corrupt_feature_cache_is_rebuilt(kitchen_root, tmp_path):
    """A features file cut short (a build killed while writing it) is extracted again."""
    names = [frame(0), frame(6)]
    path = features.main(INDOOR, kitchen_root, names, tmp_path / "feats.h5")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    features.main(INDOOR, kitchen_root, names, path)
    from pramloc.io import list_feature_names, read_features

    assert sorted(list_feature_names(path)) == names
    assert read_features(path, frame(6))["descriptors"].shape[1] == 128


# ------------------------------------------------------------------ concurrency

def test_two_localize_processes_share_a_map(kitchen_map, kitchen_root, tmp_path):
    queries = tmp_path / "q.txt"
    queries.write_text(f"{frame(3)}\n{frame(9)}\n")
    procs = [subprocess.Popen([*CLI, "-q", "localize", str(kitchen_map), "--dataset", "7scenes", "--root",
                               str(kitchen_root), "--queries", str(queries), "--mode", "retrieval",
                               "--out", str(tmp_path / f"r{i}.txt")], env=ENV, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        assert "localized 2/2" in out
    a, b = read_poses(tmp_path / "r0.txt"), read_poses(tmp_path / "r1.txt")
    assert set(a) == set(b) == {frame(3), frame(9)}
    assert all(np.allclose(a[n].tvec, b[n].tvec) for n in a)


def _variant(src: Path, dst: Path, label: str, shift: float) -> None:
    """A copy of map ``src`` whose points are moved by ``shift`` and whose manifest says
    ``label``: a reader can tell which map its data came from."""
    m = mapio.load_map(src)
    m.xyz = m.xyz + np.float32(shift)
    dst.mkdir()
    mapio.write_map_data(m, dst)
    shutil.copytree(src / mapio.SFM_DIR, dst / mapio.SFM_DIR)
    extra = {k: v for k, v in m.manifest.items()
             if k not in ("format_version", "pramloc_version", "created", "counts", "files")}
    mapio.write_manifest(dst, m, {**extra, "variant": label})


def _check_reads(path: Path, until, ok_errors=(), pause: float = 0.002) -> dict:
    """Load ``path`` until ``until()``: every load is complete and consistent, or (only for
    ``ok_errors``) a clean PramlocError. Returns counts."""
    seen = {"loads": 0, "errors": 0, "variants": set()}
    while not until():
        try:
            m = mapio.load_map(path)
        except PramlocError as err:
            assert any(e in str(err) for e in ok_errors), str(err)
            seen["errors"] += 1
            continue
        seen["loads"] += 1
        label = m.manifest.get("variant", m.manifest["created"])
        seen["variants"].add(label)
        if "variant" in m.manifest:
            assert abs(float(np.median(m.xyz[:, 0])) - m.manifest["shift_check"]) < 1.0
        time.sleep(pause)
    return seen


def test_map_replaced_under_readers(kitchen_map, tmp_path):
    """A writer process swaps two different maps in and out (mapio.commit, as
    ``build-map --overwrite`` does) while this process loads the map in a loop: every load
    gets one whole map, never a mix, and (with RENAME_EXCHANGE) never a missing folder."""
    base = float(np.median(mapio.load_map(kitchen_map).xyz[:, 0]))
    templates = tmp_path / "templates"
    templates.mkdir()
    for label, shift in (("A", 0.0), ("B", 100.0)):
        _variant(kitchen_map, templates / label, label, shift)
        man = json.loads((templates / label / "manifest.json").read_text())
        man["shift_check"] = base + shift  # not a part: the checksums still hold
        (templates / label / "manifest.json").write_text(json.dumps(man))
    out = tmp_path / "maps/shared"
    shutil.copytree(templates / "A", out)
    writer = f"""
import shutil, time
from pathlib import Path
from pramloc import mapio
out, t0, n = Path({str(out)!r}), time.monotonic(), 0
while time.monotonic() - t0 < 3.0:
    staging = mapio.staging_dir(out)
    src = Path({str(templates)!r}) / "AB"[n % 2 ^ 1]
    for p in src.iterdir():
        (shutil.copytree if p.is_dir() else shutil.copy)(p, staging / p.name)
    mapio.commit(staging, out, overwrite=True)
    n += 1
print(n)
"""
    proc = subprocess.Popen([sys.executable, "-c", writer], env=ENV, stdout=subprocess.PIPE, text=True)
    (tmp_path / "x1").mkdir(), (tmp_path / "x2").mkdir()
    exchange_ok = mapio.exchange(tmp_path / "x1", tmp_path / "x2")  # RENAME_EXCHANGE works here
    seen = _check_reads(out, lambda: proc.poll() is not None,
                        ok_errors=() if exchange_ok else ("map folder not found", "not a pramloc map"))
    swaps = int(proc.communicate()[0])
    assert proc.returncode == 0
    assert swaps > 5 and seen["loads"] > 5 and seen["variants"] == {"A", "B"}, (swaps, seen)
    assert seen["errors"] == 0 or not exchange_ok
    assert [p.name for p in out.parent.iterdir()] == ["shared"]
    # A part read later (as the localizer reads the recognizer) is checked against the
    # manifest the map was loaded with.
    m = mapio.load_map(out)
    assert len(mapio.read_part(m, mapio.MAP_H5)) == m.manifest["files"][mapio.MAP_H5]["bytes"]
    staging = mapio.staging_dir(out)
    other = "A" if m.manifest["variant"] == "B" else "B"
    for p in (templates / other).iterdir():
        (shutil.copytree if p.is_dir() else shutil.copy)(p, staging / p.name)
    mapio.commit(staging, out, overwrite=True)
    with pytest.raises(PramlocError, match="changed since it was loaded"):
        mapio.read_part(m, mapio.MAP_H5)


def test_rebuild_with_overwrite_while_reading(kitchen_map, kitchen_root, kitchen_split, tmp_path):
    """A map rebuilt three times (``build.main(overwrite=True)``, what ``build-map
    --overwrite`` runs) in a process while this one keeps loading it: every load succeeds
    (the cached features and sparse model of the fixture map make each rebuild quick)."""
    out = tmp_path / kitchen_map.name
    shutil.copytree(kitchen_map, out)
    shutil.copytree(kitchen_map.parent / f".{kitchen_map.name}.cache", tmp_path / f".{kitchen_map.name}.cache")
    _, config = _fixture_config(kitchen_map, tmp_path)
    writer = f"""
from pramloc import build
from pramloc.config import load_config
from pramloc.datasets import load_dataset
conf = load_config({str(config)!r})
scene = load_dataset("7scenes", {str(kitchen_root)!r}, {str(kitchen_split)!r})
for _ in range(2):
    build.main(conf, scene, {str(out)!r}, overwrite=True, train=False)
"""
    proc = subprocess.Popen([sys.executable, "-c", writer], env=ENV, stderr=subprocess.PIPE, text=True)
    seen = _check_reads(out, lambda: proc.poll() is not None, pause=0.02)
    assert proc.wait() == 0, proc.stderr.read()
    assert seen["errors"] == 0 and seen["loads"] > 3 and len(seen["variants"]) >= 2, seen
    assert len(mapio.load_map(out).image_names) == 8
