"""Dataset loaders: one per layout. Each returns a :class:`Scene` whose poses are
world-to-camera (converted once here) and whose image names are paths relative to
``Scene.image_dir`` (as in hloc)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .. import logger
from ..errors import PramlocError
from ..geometry import Camera, Pose

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


from .colmap import load_colmap  # noqa: E402
from .images import load_images  # noqa: E402
from .sevenscenes import load_7scenes  # noqa: E402
from .strecha import load_strecha  # noqa: E402

LOADERS = {"7scenes": load_7scenes, "strecha": load_strecha}


def load_dataset(kind: str, root: Path, split: Path | None = None) -> Scene:
    if kind not in LOADERS:
        raise PramlocError(f"unknown dataset {kind!r} (known: {', '.join(LOADERS)})")
    return LOADERS[kind](Path(root), split)


__all__ = ["ImageRecord", "Scene", "list_images", "apply_split", "load_colmap", "load_images",
           "load_7scenes", "load_strecha", "load_dataset", "LOADERS"]
