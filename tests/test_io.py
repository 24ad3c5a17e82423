"""Text formats (:mod:`pramloc.io`, dataset parsers, results files): one clear error naming
the file and line."""

from __future__ import annotations


import pytest

from pramloc.datasets import load_dataset
from pramloc.datasets.sevenscenes import read_matrix_pose
from pramloc.errors import PramlocError
from pramloc.io import read_image_list, read_poses, read_query_list

from .conftest import frame
from .helpers import KITCHEN_CAMERA, one_line_error


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
