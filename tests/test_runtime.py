"""Importing pramloc changes nothing outside it; its entry points set the process up."""

from __future__ import annotations

import json
import subprocess
import sys

from .helpers import ENV, ROOT

PROBE = """
import json, logging, os, sys
import cv2, numpy, pycolmap, torch  # their own imports may change the environment (cv2: LD_LIBRARY_PATH)
before = dict(os.environ)
root = logging.getLogger()
import pramloc, pramloc.localize, pramloc.build
log = logging.getLogger("pramloc")
out = {"env_changed": sorted(k for k in set(before) | set(os.environ) if before.get(k) != os.environ.get(k)),
       "handlers": [type(h).__name__ for h in log.handlers], "propagate": log.propagate,
       "root_handlers": len(root.handlers)}
if sys.argv[1:] == ["configure"]:
    import pramloc.runtime
    pramloc.runtime.configure()
    out["after"] = {"OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
                    "GLOG_minloglevel": os.environ.get("GLOG_minloglevel"),
                    "handlers": [type(h).__name__ for h in log.handlers], "propagate": log.propagate}
    pramloc.runtime.configure()  # idempotent: no second handler
    out["handlers_twice"] = len(log.handlers)
print(json.dumps(out))
"""


def _probe(*args: str) -> dict:
    env = {k: v for k, v in ENV.items() if k not in ("OMP_WAIT_POLICY", "GLOG_minloglevel")}
    out = subprocess.run([sys.executable, "-c", PROBE, *args], env=env, cwd=ROOT, capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_changes_nothing_outside_the_package():
    out = _probe()
    assert out["env_changed"] == []
    assert out["handlers"] == ["NullHandler"] and out["propagate"] is True
    assert out["root_handlers"] == 0


def test_configure_sets_up_the_process_once():
    out = _probe("configure")["after"]
    assert out["OMP_WAIT_POLICY"] == "PASSIVE" and out["GLOG_minloglevel"] == "2"
    assert out["handlers"] == ["NullHandler", "StreamHandler"] and out["propagate"] is False
    assert _probe("configure")["handlers_twice"] == 2


def test_an_application_sees_pramlocs_records(caplog):
    """Without runtime.configure() (an embedding application), records reach the root logger."""
    code = ("import logging, sys; logging.basicConfig(stream=sys.stdout, format='%(name)s:%(message)s', level='INFO');"
            "from pramloc.parallel import num_cores; import pramloc; pramloc.logger.info('hello')")
    out = subprocess.run([sys.executable, "-c", code], env=ENV, cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "pramloc:hello"
