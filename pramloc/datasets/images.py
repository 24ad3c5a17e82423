"""A folder of images with nothing else: cameras and poses unknown (SfM estimates them)."""

from __future__ import annotations

from pathlib import Path

from .base import ImageRecord, Scene, apply_split, list_images


def load_images(image_dir: Path, split: Path | None = None) -> Scene:
    image_dir = Path(image_dir)
    names = apply_split(list_images(image_dir), split, image_dir)
    return Scene(image_dir, [ImageRecord(n) for n in names],
                 {"kind": "images", "root": str(image_dir), "split": str(split) if split else None})
