"""Dataset loaders: one per layout. Each returns a :class:`Scene` whose poses are
world-to-camera (converted once here) and whose image names are paths relative to
``Scene.image_dir`` (as in hloc). Native layouts (``--dataset``) register themselves in
:mod:`.base`; :func:`load_colmap` and :func:`load_images` read a user's image folder."""

from .base import LAYOUTS, ImageRecord, Layout, Scene, apply_split, get, list_images, load_dataset, names, register
from .colmap import load_colmap
from .images import load_images

__all__ = ["ImageRecord", "Scene", "Layout", "LAYOUTS", "register", "names", "get", "list_images",
           "apply_split", "load_colmap", "load_images", "load_dataset"]
