"""``pramloc build-map`` on each kind of real input, the map format, and bad inputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from pramloc.cli import main as cli
from pramloc.errors import PramlocError
from pramloc.mapio import load_map

from .conftest import frame

FAST = ["--set", "triangulation.num_pairs=5", "--set", "landmarks.min_points_per_landmark=10", "--no-train"]


def run(args, ok=True):
    res = CliRunner().invoke(cli, ["-q"] + [str(a) for a in args])
    if ok:
        assert res.exit_code == 0, res.output + repr(res.exception)
    return res


def no_leftovers(folder: Path):
    return [p.name for p in folder.iterdir() if ".tmp-" in p.name or ".old-" in p.name]


def test_7scenes_map(kitchen_map, kitchen_root):
    m = load_map(kitchen_map)
    assert len(m.image_names) == 8 and m.num_landmarks == 8
    assert len(m.xyz) > 150 and m.descriptors.shape == (len(m.xyz), 128)
    assert np.all(np.diff(m.point_landmark) >= 0)  # points grouped by landmark
    # Every map image keeps observations, and every landmark is seen by some image.
    assert all(len(m.image_point_ids(i)) > 20 for i in range(len(m.image_names)))
    assert all(len(ims) > 0 for ims in m.landmark_images())
    # Map points reproject near where the image observed them (triangulated with GT poses).
    from pramloc.geometry import project

    i = 3
    pts = m.image_point_ids(i)
    uv, z = project(m.cameras[i], m.poses[i], m.xyz[pts].astype(np.float64))
    assert (z > 0).all() and np.median(np.abs(uv - [320, 240]).max(1)) < 320
    man = json.loads((kitchen_map / "manifest.json").read_text())
    assert man["stats"]["model"]["registered_images"] == 8
    assert man["stats"]["model"]["mean_reprojection_error"] < 2.0
    assert set(man["files"]) == {"map.h5"}
    assert not no_leftovers(kitchen_map.parent)


def test_export_colmap(kitchen_map, tmp_path):
    """The exported COLMAP model holds the map's points, posed images and tracks: every
    observation's pixel lies where its point projects (triangulated with the true poses)."""
    import pycolmap

    res = run(["export-colmap", kitchen_map, tmp_path / "model"])
    assert "COLMAP model" in res.output
    rec = pycolmap.Reconstruction(str(tmp_path / "model"))
    m = load_map(kitchen_map)
    assert rec.num_images() == len(m.image_names) and rec.num_points3D() == len(m.xyz)
    assert sum(p.track.length() for p in rec.points3D.values()) == len(m.image_points)
    rec.update_point_3d_errors()
    assert np.median([p.error for p in rec.points3D.values()]) < 2.0


def test_info_and_viz(kitchen_map, tmp_path):
    res = run(["info", kitchen_map])
    assert "images 8" in res.output and "landmarks 8" in res.output and "size on disk" in res.output
    assert ("localization settings: recognition_keypoints 256, landmark_visibility 0.8, match_keypoints 768, "
            "others default") in res.output  # the indoor preset's, kept in the map
    res = run(["viz-map", kitchen_map, "--out", tmp_path / "viz"])
    ply = (tmp_path / "viz/landmarks.ply").read_bytes()
    assert ply.startswith(b"ply") and b"red" in ply[:400]
    assert (tmp_path / "viz/landmarks.png").read_bytes()[:4] == b"\x89PNG"


def test_strecha_map_cli(strecha_root, tmp_path):
    split = tmp_path / "db.txt"
    split.write_text("images/0000.jpg\nimages/0002.jpg\nimages/0004.jpg\n")
    out = tmp_path / "maps/herzjesu"
    res = run(["build-map", "--dataset", "strecha", "--root", strecha_root, "--split", split, "--out", out,
               "--set", "features.max_side=640", "--set", "landmarks.num_landmarks=6", *FAST])
    assert "registered images 3" in res.output
    # Where the build cache is, its size, and how to reclaim the space.
    assert f"cache: {out.parent / '.herzjesu.cache'} (" in res.output and "delete the folder" in res.output
    m = load_map(out)
    assert m.cameras[0].width == 3072 and m.num_landmarks == 6 and len(m.xyz) > 100
    # The output exists now: refused without --overwrite, replaced with it.
    res = run(["build-map", "--dataset", "strecha", "--root", strecha_root, "--split", split, "--out", out,
               *FAST], ok=False)
    assert res.exit_code == 2 and "output exists" in res.output
    run(["build-map", "--dataset", "strecha", "--root", strecha_root, "--split", split, "--out", out,
         "--set", "features.max_side=640", "--set", "landmarks.num_landmarks=4", "--overwrite", *FAST])
    assert load_map(out).num_landmarks == 4
    assert not no_leftovers(out.parent)


def test_colmap_model_input(strecha_root, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for name in ("0004.jpg", "0005.jpg", "0006.jpg"):
        shutil.copy(strecha_root / "images" / name, images)
    import pycolmap

    # A binary model of just these images, from the text ground truth.
    rec = pycolmap.Reconstruction(str(strecha_root / "gt_colmap_text"))
    for image_id in [i for i, im in rec.images.items() if im.name not in {"0004.jpg", "0005.jpg", "0006.jpg"}]:
        rec.deregister_frame(rec.image(image_id).frame_id)
    model = tmp_path / "model"
    model.mkdir()
    text_model = tmp_path / "text_model"
    shutil.copytree(strecha_root / "gt_colmap_text", text_model)
    lines = (text_model / "images.txt").read_text().splitlines(keepends=True)
    keep = [l for i, l in enumerate(lines) if l.startswith("#") or any(n in l for n in ("0004.jpg", "0005.jpg", "0006.jpg"))]
    (text_model / "images.txt").write_text("".join(k + ("\n" if not k.startswith("#") else "") for k in keep))
    pycolmap.Reconstruction(str(text_model)).write_binary(str(model))
    out = tmp_path / "m"
    res = run(["build-map", "--images", images, "--colmap", model, "--out", out,
               "--set", "features.max_side=640", "--set", "landmarks.num_landmarks=4", *FAST])
    assert "registered images 3" in res.output
    m = load_map(out)
    assert sorted(m.image_names) == ["0004.jpg", "0005.jpg", "0006.jpg"]
    assert m.manifest["source"]["kind"] == "colmap"


def test_images_only_runs_sfm(sacre_root, tmp_path):
    out = tmp_path / "sacre"
    res = run(["build-map", "--images", sacre_root / "images", "--out", out,
               "--set", "features.max_side=640", "--set", "landmarks.num_landmarks=4",
               "--set", "landmarks.min_track_length=2", *FAST])
    m = load_map(out)
    assert len(m.image_names) >= 5, res.output  # SfM registers most of the 10 photos
    assert m.manifest["stats"]["model"]["mean_reprojection_error"] < 2.0
    assert m.cameras[0].model == "SIMPLE_RADIAL"


def test_photo_folder_cameras_pairs_and_unregistered(south_root, kitchen_root, tmp_path):
    """A user's folder: photos of two cameras (South Building photos as taken, and others
    re-saved at half size with another EXIF camera), and a photo of another place (a
    7-Scenes frame, no EXIF). Photos of one camera share intrinsics; pairs come from
    retrieval; the photo that does not register is listed by name with its reason in the
    manifest, in build-map's output and in `info`."""
    from PIL import Image

    folder = tmp_path / "photos"
    folder.mkdir()
    names = [f"P11801{i}.JPG" for i in range(41, 49)]
    for n in names:  # the photos themselves (links, not copies)
        (folder / n).symlink_to(south_root / "images" / n)
    for n in [f"P11801{i}.JPG" for i in range(49, 53)]:  # a second camera: another make and size
        with Image.open(south_root / "images" / n) as im:
            exif = im.getexif()
            exif[0x010F], exif[0x0110] = "Canon", "PowerShot"
            im.resize((768, 576)).save(folder / f"canon_{n}", exif=exif.tobytes(), quality=95)
    (folder / "kitchen.jpg").symlink_to(kitchen_root / frame(0))
    out = tmp_path / "photos_map"
    res = run(["build-map", "--images", folder, "--out", out, "--set", "features.max_side=640",
               "--set", "landmarks.num_landmarks=4", "--set", "triangulation.retrieval_pairs=3", *FAST])
    man = load_map(out).manifest
    st = man["stats"]
    assert st["pairs"]["method"] == "retrieval" and st["pairs"]["pairs"] < st["pairs"]["exhaustive_pairs"] == 78
    groups = {g["key"]: g for g in st["cameras"]}
    assert groups["Panasonic DMC-TZ3 1536x1152 f=4.6mm"]["images"] == 8
    assert groups["Canon PowerShot 768x576 f=4.6mm"]["images"] == 4
    assert groups[None]["images"] == 1 and groups[None]["source"].startswith("guess")
    m = load_map(out)
    by_name = dict(zip(m.image_names, m.cameras))
    panasonic = {by_name[n].to_string() for n in names if n in by_name}
    assert len(panasonic) == 1 and next(iter(panasonic)).startswith("SIMPLE_RADIAL 1536 1152")
    assert len(m.image_names) >= 10 and "kitchen.jpg" not in by_name
    (reason,) = [u["reason"] for u in st["unregistered"] if u["name"] == "kitchen.jpg"]
    assert "no image pair with" in reason
    assert "not registered: kitchen.jpg: no image pair" in res.output
    assert "not registered: kitchen.jpg: no image pair" in run(["info", out]).output
    assert set(st["exif_cameras"]) == {"Panasonic DMC-TZ3 1536x1152 f=4.6mm", "Canon PowerShot 768x576 f=4.6mm"}


def test_sfm_keeps_known_intrinsics(kitchen_root, kitchen_split, tmp_path):
    """Structure-from-motion ignores the poses but keeps the scene's known cameras fixed
    (without a prior focal length the mapper would refine it away from 525 px)."""
    import dataclasses

    from pramloc import features, sfm
    from pramloc.config import TriangulationConfig, load_config
    from pramloc.datasets import load_dataset

    scene = load_dataset("7scenes", kitchen_root, kitchen_split)
    scene = dataclasses.replace(scene, images=[dataclasses.replace(im, pose=None) for im in scene.images])
    feats = features.main(load_config("indoor").features, scene.image_dir, scene.names, tmp_path / "f.h5")
    rec = sfm.reconstruct(scene, feats, tmp_path / "work", TriangulationConfig()).model
    assert rec.num_reg_images() >= 6
    assert all(c.model.name == "PINHOLE" and np.allclose(c.params, [525, 525, 320, 240]) for c in rec.cameras.values())


def test_bad_inputs_give_one_line_errors(kitchen_root, tmp_path):
    def err(args):
        res = run(args, ok=False)
        assert res.exit_code == 2, res.output
        lines = [l for l in res.output.splitlines() if l.startswith("pramloc: error:")]
        assert len(lines) == 1, res.output
        return lines[0]

    assert "image folder not found" in err(["build-map", "--images", tmp_path / "missing", "--out", tmp_path / "o", *FAST])
    (tmp_path / "empty").mkdir()
    assert "no images found" in err(["build-map", "--images", tmp_path / "empty", "--out", tmp_path / "o", *FAST])
    split = tmp_path / "s.txt"
    split.write_text(frame(0) + "\nrgb/nope.jpg\n")
    assert "not found under" in err(["build-map", "--dataset", "7scenes", "--root", kitchen_root, "--split", split,
                                     "--out", tmp_path / "o", *FAST])
    # A corrupt image among the map images.
    imgs = tmp_path / "imgs"
    (imgs / "rgb").mkdir(parents=True)
    (imgs / "poses").mkdir()
    for i in (0, 6):
        shutil.copy(kitchen_root / frame(i), imgs / frame(i))
        shutil.copy(kitchen_root / f"poses/frame-{i:06d}.pose.txt", imgs / "poses")
    (imgs / frame(6)).write_bytes((kitchen_root / frame(6)).read_bytes()[:200])
    msg = err(["build-map", "--dataset", "7scenes", "--root", imgs, "--out", tmp_path / "o", *FAST])
    assert "frame-000006.color.jpg" in msg and "cannot decode" in msg
    assert not (tmp_path / "o").exists() and not no_leftovers(tmp_path)
    assert "--dataset needs --root" in err(["build-map", "--dataset", "7scenes", *FAST])


def test_damaged_maps_are_refused(kitchen_map, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(kitchen_map, bad)
    with open(bad / "map.h5", "r+b") as f:
        f.truncate(1000)
    with pytest.raises(PramlocError, match="truncated"):
        load_map(bad)
    shutil.rmtree(bad)
    shutil.copytree(kitchen_map, bad)
    (bad / "map.h5").unlink()
    with pytest.raises(PramlocError, match="map.h5: map part is missing"):
        load_map(bad)
    shutil.rmtree(bad)
    shutil.copytree(kitchen_map, bad)
    man = json.loads((bad / "manifest.json").read_text())
    man["format_version"] = 999
    (bad / "manifest.json").write_text(json.dumps(man))
    res = run(["info", bad], ok=False)
    assert res.exit_code == 2 and "format version 999 is not supported" in res.output
    (bad / "manifest.json").unlink()
    with pytest.raises(PramlocError, match="not a pramloc map"):
        load_map(bad)


def test_help_is_complete():
    """Command summaries are whole sentences (not cut with '...'), --train-minutes shows its
    default and --mode says what each mode does."""
    out = run(["--help"]).output
    commands = out.split("Commands:")[1]
    assert "..." not in commands and all(c in commands for c in ("build-map", "localize", "evaluate", "viz"))
    assert "(default: 30)" in " ".join(run(["build-map", "--help"]).output.split())
    mode_help = " ".join(run(["localize", "--help"]).output.split())
    assert "recognition: match the landmarks" in mode_help and "retrieval: match the map images" in mode_help
