"""COLMAP models from untrusted files (:mod:`pramloc.io.colmap`)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pramloc.datasets.colmap import load_colmap
from pramloc.errors import PramlocError
from pramloc.io.colmap import check_binary_model, read_colmap_model


from .helpers import ENV, one_line_error


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
