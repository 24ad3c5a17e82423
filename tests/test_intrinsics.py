"""Intrinsics of a photo given without them (EXIF or a stated guess), and the single-image
``localize`` with them: the real Sacre-Coeur night photo (real EXIF) on a small real map."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from pramloc.cli import main as cli
from pramloc.errors import PramlocError
from pramloc.features import read_image
from pramloc.intrinsics import (SOURCE_35MM, SOURCE_FOCAL_PLANE, SOURCE_GUESS, camera_from_exif, check_camera,
                                guess_camera)

from .helpers import one_line_error


def night(sacre_root: Path) -> Path:
    return sacre_root / "query" / "night.jpg"


def write_jpeg(path: Path, size: tuple[int, int], orientation: int | None = None, **exif_ifd) -> Path:
    """A gray JPEG of ``size`` (W, H) as stored, with EXIF ``orientation`` and EXIF-IFD tags."""
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    sub = exif.get_ifd(0x8769)
    for tag, value in exif_ifd.items():
        sub[int(tag[1:], 16)] = value
    Image.new("L", size, 128).save(path, exif=exif)
    return path


def test_night_photo_focal_from_its_exif(sacre_root):
    """Panasonic DMC-TZ2, FocalLengthIn35mmFilm 34: f = 34 / 36 * 2816 px."""
    cam, source = camera_from_exif(night(sacre_root))
    assert source == SOURCE_35MM
    assert (cam.model, cam.width, cam.height) == ("SIMPLE_PINHOLE", 2816, 2112)
    np.testing.assert_allclose(cam.params, [34 / 36 * 2816, 1408, 1056])


def test_exif_sources_and_orientation(tmp_path):
    # Focal in mm with the focal-plane resolution (px per cm here), for a file resized to half.
    p = write_jpeg(tmp_path / "plane.jpg", (400, 300), x920A=5.0, xA20E=2000.0, xA210=3, xA002=800, xA003=600)
    cam, source = camera_from_exif(p)
    assert source == SOURCE_FOCAL_PLANE and cam.params[0] == pytest.approx(5.0 * 200 * 0.5)
    # Rotated by 90 degrees when displayed: the camera has the decoded (displayed) size.
    p = write_jpeg(tmp_path / "rotated.jpg", (64, 48), orientation=6, xA405=28)
    cam, source = camera_from_exif(p)
    assert read_image(p).shape == (64, 48)  # (H, W): OpenCV applies the orientation
    assert source == SOURCE_35MM and (cam.width, cam.height) == (48, 64)
    np.testing.assert_allclose(cam.params, [28 / 36 * 64, 24, 32])
    # No EXIF focal: the stated guess.
    cam, source = camera_from_exif(write_jpeg(tmp_path / "plain.jpg", (80, 60)))
    assert source == SOURCE_GUESS == "guess (f = 1.2 * max(W, H))"
    np.testing.assert_allclose(cam.params, guess_camera(80, 60).params)
    np.testing.assert_allclose(cam.params, [96, 40, 30])
    with pytest.raises(PramlocError, match="cannot read the image"):
        camera_from_exif(tmp_path / "missing.jpg")


def test_wrong_camera_size_is_a_one_line_error(sacre_root, kitchen_map):
    """A 640x480 camera for the 2816x2112 night photo: refused before any work, naming the
    file and both sizes (the same check covers a portrait photo given landscape intrinsics)."""
    from pramloc.geometry import Camera

    with pytest.raises(PramlocError) as excinfo:
        check_camera(night(sacre_root), Camera.from_string("PINHOLE 640 480 525 525 320 240"))
    one_line_error(excinfo, "night.jpg", "640x480", "2816x2112")
    res = CliRunner().invoke(cli, ["-q", "localize", str(kitchen_map), str(night(sacre_root)),
                                   "--camera", "PINHOLE 2112 2816 2600 2600 1056 1408"])
    assert res.exit_code == 2 and res.output.count("\n") == 1, res.output
    assert "night.jpg: camera 2112x2816 does not fit the image, 2816x2112" in res.output


@pytest.fixture(scope="module")
def sacre_map(tmp_path_factory, sacre_root) -> Path:
    """The 10-photo Sacre-Coeur map by structure-from-motion, without recognizer."""
    from pramloc import build, datasets
    from pramloc.config import load_config

    out = tmp_path_factory.mktemp("maps") / "sacre_coeur"
    build.main(load_config("outdoor"), datasets.load_images(sacre_root / "images"), out, train=False)
    return out


def test_night_photo_localizes_with_its_exif_intrinsics(sacre_map, sacre_root):
    """No --camera: the focal comes from the EXIF, is refined in PnP, and the output says so."""
    res = CliRunner().invoke(cli, ["-q", "localize", str(sacre_map), str(night(sacre_root))])
    assert res.exit_code == 0, res.output
    assert "intrinsics estimated from EXIF 35mm-equivalent: focal 2660 px, refined to" in res.output
    from pramloc.localize import Localizer

    r = Localizer(sacre_map, "auto").localize(night(sacre_root))
    assert r.path == "retrieval" and r.num_inliers >= 100 and r.reason == ""
    assert r.intrinsics == SOURCE_35MM and r.focal_initial == pytest.approx(2659.56, abs=0.01)
    assert r.focal != r.focal_initial and 2300 < r.focal < 3300  # refined (hloc: 2959 px)
    assert r.num_inliers <= (r.num_refined_matches if r.pose_from == "refinement" else r.num_matches)


def test_given_focal_far_from_exif_is_warned_about(sacre_root):
    """A --camera focal of 1300 px for a photo whose EXIF says 2660 px gets a warning; one
    near it does not."""
    import logging

    from pramloc import intrinsics, logger
    from pramloc.geometry import Camera

    night = sacre_root / "query" / "night.jpg"
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger.addHandler(handler)
    try:
        intrinsics.check_camera(night, Camera.from_string("SIMPLE_PINHOLE 2816 2112 1300 1408 1056"))
        assert len(records) == 1 and "1300 px" in records[0].getMessage() and "2660 px" in records[0].getMessage()
        intrinsics.check_camera(night, Camera.from_string("SIMPLE_PINHOLE 2816 2112 2700 1408 1056"))
        assert len(records) == 1
    finally:
        logger.removeHandler(handler)
