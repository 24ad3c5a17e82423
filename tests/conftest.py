"""Shared fixtures: the real scenes in ../shared/data and small maps built from them.

Tests that need the real data skip without it, except under CI (``CI=true``), where
missing data fails the run at its start: a CI run must not pass having tested nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pramloc import runtime

runtime.configure()  # the tests run as the `pramloc` command does (quiet pycolmap, passive OpenMP)

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
KITCHEN = DATA / "7scenes_redkitchen"
STRECHA = DATA / "strecha_herzjesu_P25"
SACRE = DATA / "sacre_coeur"
SOUTH = DATA / "south_building"


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("true", "1")


def pytest_sessionstart(session):
    if _in_ci() and not all(p.is_dir() for p in (KITCHEN, STRECHA, SACRE, SOUTH)):
        raise pytest.UsageError(f"CI=true but the real test data is missing at {DATA} "
                                "(see ../shared/data/README.md); refusing to skip most tests")


def need_data(path: Path) -> Path:
    """``path`` (a file or folder of the real data), or skip the test (fail under CI)."""
    if not path.exists():
        if _in_ci():
            pytest.fail(f"CI=true but real test data is missing: {path}")
        pytest.skip(f"real test data not found at {path} (see ../shared/data/README.md)")
    return path


@pytest.fixture(scope="session")
def kitchen_root() -> Path:
    return need_data(KITCHEN)


@pytest.fixture(scope="session")
def strecha_root() -> Path:
    return need_data(STRECHA)


@pytest.fixture(scope="session")
def sacre_root() -> Path:
    return need_data(SACRE)


@pytest.fixture(scope="session")
def south_root() -> Path:
    return need_data(SOUTH)


def frame(i: int) -> str:
    return f"rgb/frame-{i:06d}.color.jpg"


@pytest.fixture(scope="session")
def kitchen_split(tmp_path_factory, kitchen_root) -> Path:
    """A small map split: 8 interleaved map frames (every 6th frame, 0..42)."""
    p = tmp_path_factory.mktemp("splits") / "small_db.txt"
    p.write_text("".join(frame(i) + "\n" for i in range(0, 48, 6)))
    return p


@pytest.fixture(scope="session")
def kitchen_map(tmp_path_factory, kitchen_root, kitchen_split) -> Path:
    """A small real 7-Scenes map without recognizer (built once per test session)."""
    from pramloc import build
    from pramloc.config import load_config
    from pramloc.datasets import load_dataset

    out = tmp_path_factory.mktemp("maps") / "kitchen"
    conf = load_config("indoor", ["landmarks.num_landmarks=8", "landmarks.min_points_per_landmark=10",
                                     "triangulation.num_pairs=5"])
    build.main(conf, load_dataset("7scenes", kitchen_root, kitchen_split), out, train=False)
    return out


@pytest.fixture(scope="session")
def kitchen_map_trained(tmp_path_factory, kitchen_root, kitchen_split) -> Path:
    """The small real map with a recognizer trained for a few seconds."""
    from pramloc import build
    from pramloc.config import load_config
    from pramloc.datasets import load_dataset

    out = tmp_path_factory.mktemp("maps") / "kitchen_rec"
    conf = load_config("indoor", ["landmarks.num_landmarks=8", "landmarks.min_points_per_landmark=10",
                                  "triangulation.num_pairs=5", "recognizer.train_minutes=0.3"])
    build.main(conf, load_dataset("7scenes", kitchen_root, kitchen_split), out)
    return out
