"""Bad queries in a batch (:mod:`pramloc.localize`): each is a per-query failure, the
others are localized; odd file names work end to end."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import cv2
import numpy as np

from pramloc import features
from pramloc.datasets import load_images
from pramloc.geometry import Camera
from pramloc.io import read_poses

from .conftest import frame
from .helpers import KITCHEN_CAMERA


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
