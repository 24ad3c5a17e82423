"""``manifest.json``: format version, config, source, counts, and every part's size and
checksum; written last (a folder without a manifest is never a map), checked on reading."""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from pathlib import Path

import numpy as np

from .. import MAP_FORMAT_VERSION, __version__
from ..errors import PramlocError
from .folder import _Folder
from .model import LandmarkMap
from .schema import MAP_H5

MANIFEST = "manifest.json"

_SHA256 = re.compile(r"[0-9a-f]{64}")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _part_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)


def write_manifest(folder: Path, m: LandmarkMap, extra: dict) -> dict:
    """Write ``manifest.json`` last, listing every part of ``folder`` with its size and
    checksum (a folder without a manifest is never a map)."""
    folder = Path(folder)
    files = {str(p.relative_to(folder)): {"bytes": p.stat().st_size, "sha256": _sha256(p)}
             for p in _part_files(folder)}
    manifest = {
        "format_version": MAP_FORMAT_VERSION,
        "pramloc_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **extra,
        "counts": {
            "images": len(m.image_names),
            "points": int(len(m.xyz)),
            "landmarks": int(m.num_landmarks),
            "observations": int(len(m.image_points)),
        },
        "files": files,
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2, default=_json_default))
    return manifest


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(type(o))


def _read_manifest(folder: _Folder) -> dict:
    path = folder.path
    try:
        with folder.open(MANIFEST) as f:
            text = f.read()
    except FileNotFoundError:
        raise PramlocError(f"{path}: not a pramloc map (no {MANIFEST}; an unfinished build?)") from None
    except OSError as err:
        raise PramlocError(f"{path / MANIFEST}: cannot read manifest ({err.strerror})") from None
    try:
        manifest = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise PramlocError(f"{path / MANIFEST}: manifest is corrupt (not valid JSON)") from None
    if not isinstance(manifest, dict):
        raise PramlocError(f"{path / MANIFEST}: manifest is corrupt (not a JSON object)")
    version = manifest.get("format_version")
    if version != MAP_FORMAT_VERSION:
        raise PramlocError(f"{path}: map format version {version} is not supported by pramloc "
                           f"{__version__} (expects {MAP_FORMAT_VERSION}); rebuild the map")
    files = manifest.get("files")
    if not isinstance(files, dict) or MAP_H5 not in files:
        raise PramlocError(f"{path / MANIFEST}: manifest is corrupt (no list of parts with {MAP_H5})")
    for name, info in files.items():
        parts = name.split("/")
        if name.startswith("/") or "\\" in name or any(p in ("", ".", "..") for p in parts):
            raise PramlocError(f"{path / MANIFEST}: manifest is corrupt (bad part name {name[:80]!r})")
        if not (isinstance(info, dict) and isinstance(info.get("bytes"), int) and info["bytes"] >= 0
                and isinstance(info.get("sha256"), str) and _SHA256.fullmatch(info["sha256"])):
            raise PramlocError(f"{path / MANIFEST}: manifest is corrupt (bad entry for {name[:80]!r})")
    for key in ("feature", "counts"):
        if not isinstance(manifest.get(key), dict):
            raise PramlocError(f"{path / MANIFEST}: manifest is corrupt (no {key!r})")
    return manifest


def _open_parts(folder: _Folder, manifest: dict) -> dict:
    """Open every part listed in the manifest (all at once: once open, a part stays
    readable even if its folder is deleted). {name: file object}; closes them on error."""
    files = {}
    try:
        for name in manifest["files"]:
            try:
                files[name] = folder.open(name)
            except FileNotFoundError:
                raise PramlocError(f"{folder.path / name}: map part is missing") from None
            except OSError as err:
                raise PramlocError(f"{folder.path / name}: cannot read map part ({err.strerror})") from None
    except BaseException:
        for f in files.values():
            f.close()
        raise
    return files


def _check_part(p: Path, f, info: dict, checksums: bool) -> None:
    """Size (and checksum) of one open part; leaves the file rewound, so that what is
    parsed is exactly what was checked."""
    size = os.fstat(f.fileno()).st_size
    if size != info["bytes"]:
        raise PramlocError(f"{p}: map part is truncated or changed ({size} bytes, expected {info['bytes']})")
    if checksums:
        h = hashlib.sha256()
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
        if h.hexdigest() != info["sha256"]:
            raise PramlocError(f"{p}: map part is corrupt (checksum mismatch)")
        f.seek(0)


def _checked_parts(folder: _Folder, checksums: bool) -> tuple[dict, dict]:
    """(manifest, {name: open file}) of a folder whose parts all passed the checks."""
    manifest = _read_manifest(folder)
    files = _open_parts(folder, manifest)
    try:
        for name, f in files.items():
            _check_part(folder.path / name, f, manifest["files"][name], checksums)
    except BaseException:
        for f in files.values():
            f.close()
        raise
    return manifest, files


def read_manifest(path: Path) -> dict:
    """The manifest of the map folder ``path`` (format version and structure checked)."""
    with _Folder(path) as folder:
        return _read_manifest(folder)
