"""The map folder (:mod:`pramloc.mapio`): damaged parts, and concurrent readers while a
map is replaced or rebuilt."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pramloc import mapio
from pramloc.errors import PramlocError
from pramloc.io import read_poses

from .conftest import frame
from .helpers import CLI, ENV, fixture_config


def test_damaged_map_folders(kitchen_map, tmp_path):
    def damaged(name, edit):
        m = tmp_path / name
        shutil.copytree(kitchen_map, m)
        edit(m)
        with pytest.raises(PramlocError) as e:
            mapio.load_map(m)
        return str(e.value)

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
    _, config = fixture_config(kitchen_map, tmp_path)
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
