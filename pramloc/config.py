"""Named presets from ``configs/*.yaml`` merged with overrides.

A preset may name a ``base`` preset it extends. Overrides are nested dicts or
``"section.key=value"`` strings (values parsed as YAML).
"""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

from .errors import PramlocError

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
if not CONFIG_DIR.is_dir():  # running from a checkout: configs/ sits beside the package
    CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"

PRESETS = ("indoor", "outdoor")


def deep_merge(base: dict, update: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as err:
        raise PramlocError(f"{path}: cannot read config ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise PramlocError(f"{path}: config must be a mapping")
    return data


def load_config(preset: str | Path = "indoor", overrides: dict | list[str] | None = None) -> dict:
    """Preset name (``indoor``/``outdoor``) or a YAML path, merged with ``overrides``."""
    path = Path(preset)
    if not path.suffix:
        path = CONFIG_DIR / f"{preset}.yaml"
        if not path.exists():
            raise PramlocError(f"unknown config preset {preset!r} (known: {', '.join(PRESETS)})")
    conf = _read_yaml(path)
    if "base" in conf:
        conf = deep_merge(load_config(conf.pop("base")), conf)
    if isinstance(overrides, (list, tuple)):
        overrides = parse_overrides(overrides)
    return deep_merge(conf, overrides or {})


def parse_overrides(items: list[str]) -> dict:
    out: dict = {}
    for item in items:
        if "=" not in item:
            raise PramlocError(f"override {item!r} must be 'section.key=value'")
        key, value = item.split("=", 1)
        d = out
        parts = key.strip().split(".")
        for p in parts[:-1]:
            d = d.setdefault(p, {})
        d[parts[-1]] = yaml.safe_load(value)
    return out
