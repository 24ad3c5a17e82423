"""Text and feature-file formats. Every reader raises :class:`PramlocError` naming the
file (and line) on bad input, never anything else.

Formats:
- split / image list: one image name per line (``#`` comments and blank lines skipped);
- poses (results and ground truth): ``name qw qx qy qz tx ty tz`` world-to-camera (hloc);
- query list: ``name MODEL W H params...`` (hloc);
- features HDF5 (hloc layout): one group per image name with ``keypoints`` (N, 2) float32
  (origin at the centre of the top-left pixel), ``descriptors`` (D, N) float32,
  ``scores`` (N,) float32 and ``image_size`` (2,) = (W, H) of the original image.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..errors import PramlocError
from ..geometry import Camera, Pose


def read_text(path: Path) -> str:
    """The whole UTF-8 text of ``path``, or a PramlocError naming it."""
    path = Path(path)
    if not path.is_file():
        raise PramlocError(f"{path}: file not found")
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise PramlocError(f"{path}: not a UTF-8 text file") from None
    except OSError as err:
        raise PramlocError(f"{path}: cannot read file ({err.strerror or err})") from None


def read_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, stripped text) of the lines that are neither blank nor ``#`` comments."""
    text = read_text(path)
    out = []
    for i, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if line and not line.startswith("#"):
            out.append((i, line))
    return out


def read_image_list(path: Path) -> list[str]:
    """Names, one per line (a name may contain spaces)."""
    names = [line for _, line in read_lines(path)]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise PramlocError(f"{path}: image {dup!r} is listed twice")
    return names


def parse_floats(path: Path, lineno: int, values: list[str], what: str) -> list[float]:
    """Finite floats of ``values`` (line ``lineno`` of ``path``), or a PramlocError naming them."""
    try:
        # float() also takes '1_0' and non-ASCII digits: not numbers in these formats.
        if not all(v.isascii() and "_" not in v for v in values):
            raise ValueError
        out = [float(v) for v in values]
    except ValueError:
        raise PramlocError(f"{path}:{lineno}: {what} has a non-numeric value") from None
    if not all(math.isfinite(v) for v in out):
        raise PramlocError(f"{path}:{lineno}: {what} has NaN or infinite values")
    return out


def read_poses(path: Path) -> dict[str, Pose]:
    """``name qw qx qy qz tx ty tz`` per line -> {name: Pose} (names may contain spaces)."""
    poses = {}
    for lineno, line in read_lines(path):
        parts = line.split()
        if len(parts) < 8:
            raise PramlocError(f"{path}:{lineno}: expected 'name qw qx qy qz tx ty tz', got {line[:80]!r}")
        name = line.rsplit(maxsplit=7)[0]
        vals = parse_floats(path, lineno, parts[-7:], "pose")
        if name in poses:
            raise PramlocError(f"{path}:{lineno}: image {name!r} appears twice")
        try:
            poses[name] = Pose(vals[:4], vals[4:])
        except PramlocError as err:
            raise PramlocError(f"{path}:{lineno}: {err}") from None
    return poses


def pose_line(name: str, pose: Pose) -> str:
    """One results line ``name qw qx qy qz tx ty tz\n`` (world-to-camera, hloc format)."""
    return name + " " + " ".join(f"{v:.10g}" for v in (*pose.qvec, *pose.tvec)) + "\n"


def log_path(results: Path) -> Path:
    """The JSON-lines log beside a results file: ``DIR/STEM.txt`` -> ``DIR/STEM_log.jsonl``."""
    results = Path(results)
    return results.with_name(results.stem + "_log.jsonl")


def write_poses(path: Path, poses: dict[str, Pose]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for name, p in poses.items():
            f.write(pose_line(name, p))
    return path


def read_query_list(path: Path) -> dict[str, Camera | None]:
    """hloc query list: ``name MODEL W H params...``; a bare ``name`` maps to None."""
    out: dict[str, Camera | None] = {}
    for lineno, line in read_lines(path):
        parts = line.split()
        model_idx = next((i for i in range(1, len(parts) - 2) if _looks_like_model(parts, i)), None)
        if model_idx is None:
            name, cam = line, None
        else:
            name = " ".join(parts[:model_idx])
            if not name:
                raise PramlocError(f"{path}:{lineno}: missing image name")
            try:
                cam = Camera.from_string(" ".join(parts[model_idx:]))
            except PramlocError as err:
                raise PramlocError(f"{path}:{lineno}: {err}") from None
        if name in out:
            raise PramlocError(f"{path}:{lineno}: image {name!r} appears twice")
        out[name] = cam
    return out


def _looks_like_model(parts: list[str], i: int) -> bool:
    """``parts[i]`` starts ``MODEL W H ...``: an upper-case name followed by two integers."""
    p = parts[i]
    return p.replace("_", "").isalnum() and p.isupper() and \
        parts[i + 1].isdigit() and parts[i + 2].isdigit()


# ---------------------------------------------------------------- features (HDF5, hloc)

FEATURE_KEYS = ("keypoints", "descriptors", "scores", "image_size")


def write_features(path: Path, name: str, feats: dict[str, np.ndarray]) -> None:
    """Write one image's features as a group ``name`` (overwriting it). ``image_size`` is
    written last: a group that has it is complete (see :func:`list_feature_names`)."""
    import h5py

    try:
        with h5py.File(path, "a", libver="latest") as f:
            if name in f:
                del f[name]
            g = f.create_group(name)
            for k in sorted(feats, key=lambda k: k == "image_size"):
                g.create_dataset(k, data=feats[k])
    except OSError as err:
        raise PramlocError(f"{path}: cannot write features file ({_h5_reason(err)})") from None


def _h5_reason(err: Exception) -> str:
    return str(err).splitlines()[0][:160] if str(err) else type(err).__name__


def read_features(path: Path, name: str) -> dict[str, np.ndarray]:
    """-> {'keypoints': (N, 2), 'descriptors': (N, D) (transposed from the file), ...}."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            g = f.get(name)
            if not isinstance(g, h5py.Group):
                raise PramlocError(f"{path}: no features for image {name!r}")
            out = {k: g[k][()] for k in g.keys() if isinstance(g[k], h5py.Dataset)}
    except (OSError, KeyError, ValueError, TypeError) as err:
        raise PramlocError(f"{path}: cannot read features file ({_h5_reason(err)})") from None
    missing = [k for k in FEATURE_KEYS if k not in out]
    if missing:
        raise PramlocError(f"{path}: features of image {name!r} lack {', '.join(missing)} (unfinished write?)")
    kp, desc = out["keypoints"], out["descriptors"]
    if kp.ndim != 2 or kp.shape[1] != 2 or desc.ndim != 2 or desc.shape[1] != len(kp):
        raise PramlocError(f"{path}: features of image {name!r} have inconsistent shapes "
                           f"(keypoints {kp.shape}, descriptors {desc.shape})")
    out["descriptors"] = desc.T
    return out


def list_feature_names(path: Path) -> list[str]:
    """All image names in a features file whose features are complete (names with '/'
    are nested groups, as in hloc). An unreadable file raises :class:`PramlocError`."""
    import h5py

    names = []

    def visit(n, obj):
        if isinstance(obj, h5py.Group) and all(isinstance(obj.get(k), h5py.Dataset) for k in FEATURE_KEYS):
            names.append(n)

    if not Path(path).exists():
        return []
    try:
        with h5py.File(path, "r") as f:
            f.visititems(visit)
    except (OSError, KeyError, ValueError, RuntimeError) as err:
        raise PramlocError(f"{path}: cannot read features file ({_h5_reason(err)})") from None
    return names
