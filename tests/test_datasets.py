"""Dataset loaders on the real scenes, and their errors on bad input."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from pramloc.datasets import load_colmap, load_dataset, load_images
from pramloc.errors import PramlocError
from pramloc.datasets.strecha import read_strecha_camera
from pramloc.io import read_poses, read_query_list

from .conftest import frame


def test_7scenes_poses_are_world_to_camera(kitchen_root):
    scene = load_dataset("7scenes", kitchen_root, kitchen_root / "splits/interleaved_db.txt")
    assert len(scene.images) == 167
    im = scene[frame(0)]
    T = np.loadtxt(kitchen_root / "poses/frame-000000.pose.txt")  # camera-to-world
    assert np.allclose(im.pose.center, T[:3, 3], atol=1e-6)
    assert np.allclose(im.pose.R, T[:3, :3].T, atol=1e-3)
    assert im.camera.to_string() == "PINHOLE 640 480 525 525 320 240"


def test_strecha_matches_its_colmap_ground_truth(strecha_root):
    scene = load_dataset("strecha", strecha_root, strecha_root / "splits/db.txt")
    assert len(scene.images) == 13
    gt = load_colmap(strecha_root / "images", strecha_root / "gt_colmap_text")
    for im in scene.images:
        ref = gt[im.name.split("/")[-1]]
        assert np.allclose(im.pose.center, ref.pose.center, atol=1e-4)
        assert np.allclose(im.camera.params, ref.camera.params)


def test_images_only(sacre_root):
    scene = load_images(sacre_root / "images")
    assert len(scene.images) == 10 and all(im.pose is None for im in scene.images)


def test_missing_and_empty_image_folder(tmp_path):
    with pytest.raises(PramlocError, match="not found"):
        load_images(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(PramlocError, match="no images"):
        load_images(tmp_path / "empty")


def test_split_naming_unknown_images(kitchen_root, tmp_path):
    split = tmp_path / "split.txt"
    split.write_text(frame(0) + "\nrgb/frame-999999.color.jpg\n")
    with pytest.raises(PramlocError, match=r"split\.txt: 1 image\(s\) not found.*999999"):
        load_dataset("7scenes", kitchen_root, split)


def test_colmap_model_missing_files_and_unknown_images(strecha_root, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(strecha_root / "gt_colmap_text", model)
    (model / "points3D.txt").unlink()
    with pytest.raises(PramlocError, match="missing points3D.txt"):
        load_colmap(strecha_root / "images", model)
    shutil.copy(strecha_root / "gt_colmap_text/points3D.txt", model)
    images = tmp_path / "images"
    images.mkdir()
    for name in ("0000.jpg", "0001.jpg"):
        shutil.copy(strecha_root / "images" / name, images)
    with pytest.raises(PramlocError, match="names image '0002.jpg' that is not in"):
        load_colmap(images, model)


def test_unsupported_camera_model(strecha_root, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(strecha_root / "gt_colmap_text", model)
    text = (model / "cameras.txt").read_text().replace("PINHOLE 3072 2048 2759.48 2764.16 1520.69 1006.81",
                                                       "FOV 3072 2048 2759.48 2764.16 1520.69 1006.81 0.1")
    (model / "cameras.txt").write_text(text)
    with pytest.raises(PramlocError, match="unsupported camera model 'FOV'"):
        load_colmap(strecha_root / "images", model)


def test_text_parsers_name_the_line(tmp_path, strecha_root):
    p = tmp_path / "poses.txt"
    p.write_text("a.jpg 1 0 0 0 0 0 0\nb.jpg 1 0 0 nan 0 0 0\n")
    with pytest.raises(PramlocError, match=r"poses\.txt:2: .*NaN"):
        read_poses(p)
    q = tmp_path / "queries.txt"
    q.write_text("my photo.jpg PINHOLE 640 480 525 525 320\n")
    with pytest.raises(PramlocError, match=r"queries\.txt:1: .*needs 4 parameters"):
        read_query_list(q)
    q.write_text("my photo.jpg PINHOLE 640 480 525 525 320 240\n")
    assert read_query_list(q)["my photo.jpg"].width == 640
    cam, pose = read_strecha_camera(strecha_root / "gt_cameras_strecha/0000.jpg.camera")
    assert cam.width == 3072 and np.isclose(np.linalg.det(pose.R), 1)
    bad = tmp_path / "x.camera"
    bad.write_text("1 2 3\n")
    with pytest.raises(PramlocError, match="needs 9 lines"):
        read_strecha_camera(bad)


def test_layout_registry_feeds_the_cli():
    """The layouts register themselves (one module each) with their default preset; the
    CLI's --dataset choices are the registry's names."""
    from pramloc import datasets
    from pramloc.cli import DATASETS

    assert datasets.names() == ["7scenes", "strecha"] == list(DATASETS.choices)
    assert datasets.get("7scenes").preset == "indoor" and datasets.get("strecha").preset == "outdoor"
    with pytest.raises(PramlocError, match="unknown dataset 'tum' \\(known: 7scenes, strecha\\)"):
        datasets.load_dataset("tum", "/nowhere")
    with pytest.raises(PramlocError, match="--dataset needs --root"):
        datasets.load_dataset("strecha", None)
