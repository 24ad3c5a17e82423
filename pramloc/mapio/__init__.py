"""The map folder: the one place that knows its layout.

    maps/NAME/
      manifest.json   format version, config, source, feature type, counts, checksums
      map.h5          points, landmarks, images (poses, observations), retrieval data
      recognizer.pt   the trained landmark recognizer (when trained)

A map is written into a temporary sibling folder and moved into place only when
complete; loading checks the version and every part's size and checksum.

Concurrency (Linux): replacing a map (``--overwrite``) swaps the new folder and the old one
in one atomic ``renameat2(RENAME_EXCHANGE)``, so ``maps/NAME`` never disappears, and
:func:`load_map` reads every part through one directory descriptor, so a load that races
a replacement sees either the whole old map or the whole new one (it retries when the old
one is deleted under it). Elsewhere the old folder is moved aside first, which leaves a
moment when ``maps/NAME`` is missing ("map folder not found").

Modules: :mod:`.model` (:class:`LandmarkMap`), :mod:`.schema` (``map.h5``),
:mod:`.manifest` (``manifest.json``), :mod:`.folder` (atomic folder write and read).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from .. import retrieval
from ..errors import PramlocError
from .folder import _Folder, commit, exchange, part_sizes, remove_stale_staging, staging_dir
from .manifest import MANIFEST, _checked_parts, _open_parts, read_manifest, write_manifest
from .model import POINTS_ORDER, RECOGNIZER, LandmarkMap, check_consistency
from .schema import MAP_H5, dequantize_descriptors, h5_part_sizes, quantize_descriptors, read_map_data, write_map_data

class _Replaced(Exception):
    """The map folder was replaced while it was being read."""


def _load(path: Path, checksums: bool, lazy: bool = False) -> LandmarkMap:
    with _Folder(path) as folder:
        try:
            manifest, files = _checked_parts(folder, checksums)
        except PramlocError:
            if folder.replaced():  # the map was rebuilt under us: read the new one
                raise _Replaced from None
            raise
    try:
        m = read_map_data(files[MAP_H5], manifest, path, lazy=lazy)
    except (OSError, KeyError, ValueError, TypeError, IndexError, AttributeError, PramlocError) as err:
        msg = str(err).splitlines()[0][:160] if str(err) else type(err).__name__
        raise PramlocError(f"{path / MAP_H5}: cannot read map data ({msg})") from None
    finally:
        for f in files.values():
            f.close()
    check_consistency(m)
    return m


def load_map(path: Path, checksums: bool = True, lazy: bool = False) -> LandmarkMap:
    """Load and validate a map folder. Safe while another process replaces the map
    (``build-map --overwrite``): the result is the old map or the new one, never a mix.
    ``lazy``: memory-map the large arrays instead of reading them (localization: the
    processes of one machine share the pages; see :func:`read_map_data`)."""
    path = Path(path)
    for _ in range(10):
        try:
            return _load(path, checksums, lazy)
        except _Replaced:
            continue
    raise PramlocError(f"{path}: the map kept changing while it was loaded (being rebuilt?); try again")


def read_part(m: LandmarkMap, name: str) -> bytes:
    """The bytes of part ``name`` (e.g. :data:`RECOGNIZER`) of a loaded map, checked
    against the manifest it was loaded with: a part read after the map folder was
    replaced (``build-map --overwrite``) raises instead of mixing two maps."""
    info = m.manifest.get("files", {}).get(name)
    if m.path is None or info is None:
        raise PramlocError(f"{m.path}: map has no part {name!r}")
    with _Folder(m.path) as folder:
        files = _open_parts(folder, {"files": {name: info}})
    with files[name] as f:
        data = f.read()
    if len(data) != info["bytes"] or hashlib.sha256(data).hexdigest() != info["sha256"]:
        raise PramlocError(f"{m.path / name}: the map changed since it was loaded (rebuilt?); load it again")
    return data


def retrieval_index(m: LandmarkMap) -> retrieval.GlobalIndex:
    """The map's retrieval index, of the method its manifest names (rows = map images)."""
    if not m.retrieval:
        raise PramlocError(f"{m.path}: map has no retrieval index")
    method = m.manifest.get("retrieval", {}).get("method", "vlad")  # maps before the manifest named it
    return retrieval.from_arrays(method, m.retrieval)


__all__ = ["LandmarkMap", "MANIFEST", "MAP_H5", "POINTS_ORDER", "RECOGNIZER", "check_consistency", "commit",
           "dequantize_descriptors", "exchange", "h5_part_sizes", "load_map", "part_sizes", "quantize_descriptors",
           "read_manifest", "read_part", "remove_stale_staging", "retrieval_index", "staging_dir",
           "write_manifest", "write_map_data"]
