"""Helpers shared by the tests (no fixtures: see conftest.py)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from pramloc import mapio
from pramloc.config import load_config

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


def fixture_config(kitchen_map: Path, tmp_path: Path) -> tuple[dict, Path]:
    """The configuration the kitchen_map fixture was built with, and as a YAML file."""
    import yaml

    conf = mapio.read_manifest(kitchen_map)["config"]
    path = tmp_path / "fixture.yaml"
    path.write_text(yaml.safe_dump(conf))
    return conf, path
