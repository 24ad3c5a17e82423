"""The scene data model (:class:`Scene` of :class:`ImageRecord`), image listing and splits,
and the registry of dataset layouts (``--dataset NAME``).

A layout is a loader ``load(root, split) -> Scene`` in a module of this package,
registered with :func:`register` together with its default preset; the CLI's choices
come from :func:`names`. Adding a layout = one new module here (found automatically) +
its test.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .. import logger
from ..errors import PramlocError
from ..geometry import Camera, Pose
from ..registry import Registry

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


@dataclass
class ImageRecord:
    """One image: ``name`` relative to the scene's image dir, its camera (None if unknown)
    and world-to-camera pose (None if unknown)."""

    name: str
    camera: Camera | None = None
    pose: Pose | None = None


@dataclass
class Scene:
    image_dir: Path
    images: list[ImageRecord]
    source: dict = field(default_factory=dict)  # for the manifest: kind, root, split, ...

    def path(self, name: str) -> Path:
        return self.image_dir / name

    @property
    def names(self) -> list[str]:
        return [im.name for im in self.images]

    def __getitem__(self, name: str) -> ImageRecord:
        if not hasattr(self, "_index"):
            self._index = {im.name: im for im in self.images}
        return self._index[name]

    def subset(self, names: list[str]) -> "Scene":
        return Scene(self.image_dir, [self[n] for n in names], dict(self.source))


def list_images(image_dir: Path) -> list[str]:
    """All images under ``image_dir`` (recursive), as sorted relative names."""
    image_dir = Path(image_dir)
    if not image_dir.is_dir():
        raise PramlocError(f"{image_dir}: image folder not found")
    names = sorted(
        str(p.relative_to(image_dir)) for p in image_dir.rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
    )
    bad = [n for n in names if not _is_utf8(n)]
    if bad:  # they could not be written to features files, results or logs
        logger.warning("%s: skipping %d image(s) whose file name is not valid UTF-8 (rename them), e.g. %r",
                       image_dir, len(bad), bad[0])
        names = [n for n in names if _is_utf8(n)]
    if not names:
        raise PramlocError(f"{image_dir}: no images found (looked for {', '.join(IMAGE_EXTENSIONS)})")
    return names


def _is_utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes of the file system, kept as surrogates
        return False
    return True


def apply_split(names: list[str], split: Path | None, root: Path) -> list[str]:
    """Restrict ``names`` to those in the split file (order of the split)."""
    if split is None:
        return names
    from ..io import read_image_list

    wanted = read_image_list(split)
    if not wanted:
        raise PramlocError(f"{split}: split file is empty")
    known = set(names)
    unknown = [n for n in wanted if n not in known]
    if unknown:
        raise PramlocError(
            f"{split}: {len(unknown)} image(s) not found under {root}, e.g. {unknown[0]!r}")
    return wanted


@dataclass(frozen=True)
class Layout:
    """A dataset in its native layout: ``load(root, split)`` and the preset it builds with."""

    name: str
    load: Callable[[Path, Path | None], Scene]
    preset: str


LAYOUTS: Registry[Layout] = Registry("pramloc.datasets", "dataset")


def register(name: str, preset: str):
    """Decorator of a loader ``load(root, split) -> Scene``: the layout ``--dataset name``."""

    def deco(load: Callable[[Path, Path | None], Scene]):
        LAYOUTS.add(name, Layout(name, load, preset))
        return load

    return deco


def names() -> list[str]:
    """Names of the registered layouts (the CLI's ``--dataset`` choices)."""
    return LAYOUTS.names()


def get(name: str) -> Layout:
    return LAYOUTS.get(name)


def load_dataset(name: str, root: Path | None, split: Path | None = None) -> Scene:
    """The scene of dataset layout ``name`` at ``root`` (restricted to ``split``)."""
    if root is None:
        raise PramlocError("--dataset needs --root")
    return get(name).load(Path(root), split)
