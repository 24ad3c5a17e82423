"""Image decoding for feature extraction (:mod:`pramloc.features`) on bad, huge, odd and
rotated real images; the feature cache survives a corrupt file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from pramloc import features
from pramloc.datasets import load_dataset
from pramloc.errors import PramlocError
from pramloc.geometry import Camera

from .conftest import frame
from .helpers import ENV, INDOOR, KITCHEN_CAMERA, one_line_error


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
