"""Progress reporting: a bar on a terminal, plain periodic log lines elsewhere."""

from __future__ import annotations

import logging

import pytest

from pramloc import progress


@pytest.fixture
def caplog(caplog):
    """caplog that also sees the ``pramloc`` logger (it does not propagate to the root)."""
    log = logging.getLogger("pramloc")
    log.addHandler(caplog.handler)
    yield caplog
    log.removeHandler(caplog.handler)


def test_log_lines_without_a_terminal(monkeypatch, caplog):
    monkeypatch.setattr(progress.sys.stderr, "isatty", lambda: False, raising=False)
    monkeypatch.setattr(progress, "DISABLE", False)
    caplog.set_level(logging.INFO, logger="pramloc")
    items = list(progress.track(range(5), desc="features"))
    assert items == [0, 1, 2, 3, 4]
    lines = [r.getMessage() for r in caplog.records]
    assert lines and lines[-1].startswith("features: 5/5 (") and not any("\r" in l for l in lines)
    # A bar driven by hand, in seconds, with a postfix; a line at most every `every` seconds.
    caplog.clear()
    bar = progress.LogProgress(desc="recognizer", total=570, every=0.0)
    bar.update(12.4)
    bar.set_postfix({"epoch": 3, "train_loss": "4.512"})
    bar.update(20.0)
    bar.close()
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("recognizer: 12/570 (") and lines[-1].endswith("epoch=3, train_loss=4.512")
    assert "32/570" in lines[-1]


def test_quiet_disables_progress(monkeypatch, caplog):
    monkeypatch.setattr(progress, "DISABLE", True)
    caplog.set_level(logging.INFO, logger="pramloc")
    assert list(progress.track(range(3), desc="x")) == [0, 1, 2]
    assert not caplog.records
