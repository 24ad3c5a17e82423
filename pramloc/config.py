"""One typed configuration per pipeline stage, in the spirit of pycolmap's options.

Each dataclass below holds the only copy of its stage's defaults. Presets
(``configs/*.yaml``) and ``--set section.key=value`` overrides hold only what differs;
:meth:`StageConfig.from_dict` rejects an unknown key or a value of the wrong type with an
error naming the key and the closest valid one.

- :class:`PipelineConfig` (``build-map``): sections ``features``, ``triangulation``,
  ``landmarks``, ``recognizer``, ``retrieval``, and ``localization``, kept in the map;
- :class:`LocalizationConfig` (``localize``): section ``localization``: the map's (its
  preset's) settings, updated by those given to ``localize`` or ``serve``;
- :class:`UpdateConfig` (``update-map``): section ``update``.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import PramlocError

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
if not CONFIG_DIR.is_dir():  # running from a checkout: configs/ sits beside the package
    CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"

PRESETS = ("indoor", "outdoor")


def _closest(key: str, valid, section: str = "") -> str:
    """" (did you mean 'section.key'?)" for the valid key closest to ``key`` (as it is written
    in ``--set``: with its section)."""
    near = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.0)
    return f" (did you mean {(f'{section}.' if section else '') + near[0]!r}?)" if near else ""


def _type_ok(value: Any, hint: Any) -> bool:
    """Whether ``value`` (parsed from YAML) fits the annotation ``hint``."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return any(_type_ok(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is list:
        (item,) = typing.get_args(hint) or (Any,)
        return isinstance(value, list) and all(item is Any or _type_ok(v, item) for v in value)
    if origin is dict or hint is dict:
        return isinstance(value, dict)
    return isinstance(value, hint)


@dataclass
class StageConfig:
    """Base of the stage configurations: construction from a (partial) dict, checked."""

    @classmethod
    def from_dict(cls, values: dict | None, section: str = "") -> "StageConfig":
        """Defaults updated with ``values``; unknown keys and wrong types raise
        :class:`PramlocError` naming ``section.key``."""
        values = values or {}
        if not isinstance(values, dict):
            raise PramlocError(f"config section {section!r} must be a mapping, got {values!r}")
        hints = typing.get_type_hints(cls)
        names = [f.name for f in dataclasses.fields(cls)]
        for key, value in values.items():
            where = f"{section}.{key}" if section else str(key)
            if key not in names:
                raise PramlocError(f"unknown config key {where!r}{_closest(str(key), names, section)}")
            if not _type_ok(value, hints[key]):
                raise PramlocError(f"config key {where!r} must be {_type_name(hints[key])}, got {value!r}")
        defaults = cls()
        merged = {k: deep_merge(getattr(defaults, k), v) if isinstance(v, dict) else copy.deepcopy(v)
                  for k, v in values.items()}  # a nested dict (e.g. ``augment``) updates its default
        return cls(**merged)

    @classmethod
    def of(cls, conf: "StageConfig | dict | None", section: str = "") -> "StageConfig":
        """``conf`` itself if already typed, else :meth:`from_dict`."""
        return conf if isinstance(conf, cls) else cls.from_dict(conf, section)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _type_name(hint) -> str:
    return str(hint).replace("typing.", "").replace("<class '", "").replace("'>", "")


@dataclass
class FeatureConfig(StageConfig):
    """Local features (``pramloc/features/``)."""

    name: str = "sift"            # extractor: sift | xfeat | disk (pramloc/features/; xfeat, disk: scripts/install.sh, see the README)
    max_side: int | None = 640    # images are resized so that max(W, H) <= max_side (null: never)
    max_keypoints: int | None = 2048  # strongest kept (null: all)
    root_sift: bool = True        # sift only
    device: str = "cpu"           # learned extractors: cpu | cuda | auto (cuda if available)
    num_threads: int | None = None  # learned extractors on a CPU: torch threads (null: the cores idle when
                                    # the network is loaded; oversubscribed cores make it many times slower)


@dataclass
class TriangulationConfig(StageConfig):
    """Sparse model (``pramloc/sfm.py``): pairs, matching and pycolmap triangulation."""

    num_pairs: int = 20                      # map images matched per image (nearest by pose, known poses)
    pairs: str = "auto"                      # pairs of structure-from-motion from images alone (pramloc/pairs.py):
                                             # retrieval (each photo with its retrieval_pairs most similar by the
                                             # map's retrieval method, plus sequential_pairs successors when the
                                             # names number a sequence) | exhaustive | auto: retrieval unless
                                             # exhaustive is no more pairs
    retrieval_pairs: int = 20                # k of the retrieval pairs
    sequential_pairs: int = 5                # successors paired with each image of a numbered sequence
    max_pair_distance: float | None = 3.0    # metres between camera centres for a pair (null: any)
    min_overlap_angle: float = 60.0          # degrees between viewing directions for a pair
    ratio: float = 0.9                       # ratio test of the pairwise matching (matcher nn), known poses
    sfm_ratio: float = 0.8                   # ... without poses (structure-from-motion; COLMAP's): the matches
                                             # are not checked against poses, and looser ones make two-view
                                             # RANSAC ~5x slower
    matcher: str = "auto"                    # pair matching: nn (mutual nearest neighbours, ratio test) |
                                             # lightglue (the extractor's LightGlue: xfeat, disk; seconds per
                                             # pair on a CPU, see docs/BENCHMARKS.md) | auto: lightglue for
                                             # structure-from-motion (images alone) when the extractor has one
                                             # and there are at most lightglue_max_pairs pairs, else nn
    lightglue_max_pairs: int = 200           # auto: more pairs than this are matched by nn (time)
    max_epipolar_error: float = 4.0          # px, Sampson distance to the known-pose epipolar line
    max_reproj_error: float = 4.0            # px
    min_tri_angle: float = 1.5               # degrees
    sfm_init_min_tri_angle: float = 8.0      # degrees, SfM's initial image pair (pycolmap: 16; at 16 a
                                             # third of the Sacre-Coeur rebuilds registered 2 of 10 photos)
    sfm_min_inliers: int = 15                # PnP inliers that register a photo in SfM (pycolmap: 30; at 30 the
                                             # first 64 South Building photos split into models of 47 and 15)


@dataclass
class LandmarksConfig(StageConfig):
    """Outlier removal, sparsification and landmark clustering (``pramloc/landmarks.py``)."""

    num_landmarks: int = 32
    min_points_per_landmark: int = 30   # fewer landmarks on small maps
    outlier_neighbors: int = 20         # open3d statistical outlier removal
    outlier_std_ratio: float = 2.0
    min_track_length: int = 3
    landmark_points_per_image: int = 200  # landmarks are clustered from each map image's best-observed points
    points_per_image: int | None = None   # points stored per map image, best-observed first (null: every
                                          # point seen by min_track_length images)
    seed: int = 0                       # also the seed of structure-from-motion


@dataclass
class RecognizerConfig(StageConfig):
    """Landmark recognizer model and training (``pramloc/recognition/``)."""

    # model (CPU-sized: 0.22M parameters, ~19 ms per query at 1024 keypoints; see ``cuda``)
    width: int = 96
    layers: int = 2
    heads: int = 2
    mlp_ratio: int = 2
    dropout: float = 0.0
    fourier_sigma: float = 10.0   # init std of the positional Fourier frequencies (per normalised unit)
    # data
    max_keypoints: int = 1024     # keypoints of a validation image (the first ones)
    train_keypoints: list[int] = field(default_factory=lambda: [128, 384])  # range per training view
    val_fraction: float = 0.1     # share of the map images held out for validation
    val_every: int = 100          # steps between validations (at the end of the epoch that reaches them; and at
                                  # the end)
    # optimisation; the budget is sized to the map: steps_per_image x the training images (at
    # least min_steps; an epoch is one step per batch_size images), the lr schedule fitted to it.
    # Training stops earlier when the validation keypoint accuracy has not improved by
    # min_improvement for patience steps, and at train_minutes in any case.
    steps_per_image: float = 12.0  # 7-Scenes: 16 -> 12 kept every threshold inside the seed spread (interleaved
                                   # 97.6/98.2/100/100, block 56.7/50.7/90.3/100 with auto) for 25% less training
    min_steps: int = 1500
    epochs: int | None = None     # a fixed number of epochs instead of the step budget
    patience: int | None = 600    # steps without min_improvement of the validation accuracy (its running mean) before
                                  # stopping (null: off)
    min_improvement: float = 0.005
    train_minutes: float | None = 30.0  # hard time limit (null: none)
    batch_size: int = 8
    lr: float = 3e-3
    weight_decay: float = 0.05
    warmup_steps: int = 30
    label_smoothing: float = 0.1
    background_weight: float = 0.1  # loss weight of the background class (landmarks: 1)
    visibility_weight: float = 1.0  # loss weight of the landmark-visibility head (ranks the landmarks)
    augment: dict = field(default_factory=lambda: {
        "scale": 0.35, "rotation": 15.0, "aspect": 0.1, "shift": 0.2, "jitter": 0.004, "descriptor_noise": 0.03})
    seed: int = 0
    device: str = "cpu"           # cpu | cuda | auto (cuda if available)
    num_threads: int | None = None  # CPU threads (null: the idle cores, 1..8, see train.default_threads)
    # overrides when training on a GPU: a larger model and views
    cuda: dict = field(default_factory=lambda: {
        "width": 256, "layers": 4, "heads": 4, "batch_size": 16, "train_keypoints": [256, 1024]})


@dataclass
class RetrievalConfig(StageConfig):
    """Global-descriptor retrieval (``pramloc/retrieval/``)."""

    method: str = "vlad"        # registry name (pramloc/retrieval/): vlad (the local descriptors) | anyloc |
                                # gem | supervlad | landmark-vlad (a dense backbone over the image)
    num_words: int = 16         # vlad: vocabulary size
    dense_words: int = 64       # anyloc: vocabulary size (AnyLoc: 32-64; 7-Scenes block R@1 16: 60%, 64: 73%)
    storage: str = "int8"       # vlad vector storage: int8 | float16 (dense methods: float16)
    top_k: int = 10             # map images retrieved per query
    seed: int = 0
    backbone: str = "xfeat"     # dense methods: xfeat (64-D, stride 8) | disk (128-D, stride 8) | dinov2 (needs weights)
    weights: str | None = None  # backbone dinov2: a DINOv2 checkpoint file on disk (never downloaded)
    max_side: int | None = 640  # dense methods: images resized so that max(W, H) <= max_side
    dim: int | None = None      # anyloc: PCA to this size (at most the map images - 1; null: none)
    whiten: bool = True         # ... the PCA components whitened (scaled to unit variance)
    gem_p: float = 3.0          # gem: the generalized mean's exponent
    region_dim: int = 128       # landmark-vlad: each region's VLAD projected by PCA to this size
    clusters: int = 4           # supervlad: clusters (SuperVLAD: few) ...
    ghost_clusters: int = 1     # ... and ghost clusters (their assignments are dropped)
    train_steps: int = 300      # supervlad: training steps on the map images (co-visible pairs)
    device: str = "cpu"         # dense methods: cpu | cuda | auto
    num_threads: int | None = None  # dense methods on a CPU: torch threads (null: the cores idle when first asked)


@dataclass
class LocalizationConfig(StageConfig):
    """Per-query localization (``pramloc/localize.py``); pixel values are at the
    feature-extraction resolution (scaled for larger images)."""

    min_inliers: int = 30           # accept a pose with at least this many PnP inliers (after refinement)
    min_first_inliers: int = 20     # a first pose to refine needs this many (at most min_inliers): the
                                    # refinement checks it (night photos: 23-29 -> 220-260 inliers)
    ransac_max_error: float = 12.0  # px, RANSAC threshold of the first pose
    refine_max_error: float = 12.0  # px, RANSAC threshold of the refined pose
    ratio: float | None = None      # ratio test of the 2D-3D matching (null: the map's extractor's, see
                                    # pramloc/features/: SIFT 0.9, XFeat and DISK none; 1.0: none)
    recognition_keypoints: int = 512   # keypoints labelled by the recognizer (the strongest; attention grows with
                                    # the square of their number: 8.5 ms at 512, 14 at 1024 on 2 cores)
    landmark_visibility: float = 0.9  # landmarks matched together: those holding this share of the predicted visibility
    max_landmarks: int = 32         # ... at most this many
    hypotheses: int = 2             # landmark groups tried in turn until a confident pose (by visibility, by votes)
    match_keypoints: int = 1024     # the strongest keypoints matched to the landmarks (refinement: all)
    landmark_points: int | None = 256  # points of each recognized landmark matched first: those seen by the most
                                    # map images (null: all); the refinement matches the co-visible images' points
    min_votes: float = 3.0          # votes of the first group of landmarks; below: recognition is unsure
    confident_inliers: int = 100    # below: the next landmark group is tried; auto: retrieval too (most inliers wins)
    refine_radius: float = 20.0     # px, search radius of the matching by projection
    covisible_images: int = 10      # map images (most co-visible with the first inliers) whose points the refinement matches
    seed: int = 0


@dataclass
class UpdateConfig(StageConfig):
    """Growing a map with new photos (``pramloc/update.py``); the map's own build config
    (its manifest's) rules features, triangulation and landmarks."""

    num_pairs: int = 20              # map images (and other new photos) matched with each new photo, nearest by pose
    landmark_margin: float = 1.2     # a new point joins its nearest landmark when it lies within this factor of the
                                     # landmark's extent (the 95th percentile distance of its points to its centre)
    new_landmark_points: int | None = None  # points per new landmark (null: the median of the map's landmarks)
    finetune: bool = True            # fine-tune the recognizer (off: the map keeps no recognizer)
    steps_per_new_image: float = 6.0  # fine-tuning steps per new photo (each batch also replays old photos)
    min_steps: int = 50              # ... at least
    max_steps: int | None = None     # ... at most (null: no cap)
    new_share: float = 0.5           # share of each fine-tuning batch drawn from the new photos (rest: old ones)
    lr: float = 1e-3                 # fine-tuning learning rate (a full training's: 3e-3)
    warmup_steps: int = 20
    patience: int | None = 300       # steps without improvement of the validation accuracy before stopping
    min_inliers: int = 50            # photos without poses: PnP inliers of the localization that registers one
    seed: int = 0


def update_config(overrides: dict | list[str] | None = None) -> UpdateConfig:
    """:class:`UpdateConfig` from ``key=value`` (or ``update.key=value``) strings or a dict."""
    return _section_config(UpdateConfig, "update", overrides)


SECTIONS: dict[str, type[StageConfig]] = {
    "features": FeatureConfig,
    "triangulation": TriangulationConfig,
    "landmarks": LandmarksConfig,
    "recognizer": RecognizerConfig,
    "retrieval": RetrievalConfig,
    "localization": LocalizationConfig,
}


@dataclass
class PipelineConfig:
    """Everything ``build-map`` needs: one typed section per stage, and the preset's name;
    ``localization``: the preset's localization settings, kept with the map (its manifest)
    as the defaults of every :class:`~pramloc.localize.Localizer` of it."""

    name: str = ""
    features: FeatureConfig = field(default_factory=FeatureConfig)
    triangulation: TriangulationConfig = field(default_factory=TriangulationConfig)
    landmarks: LandmarksConfig = field(default_factory=LandmarksConfig)
    recognizer: RecognizerConfig = field(default_factory=RecognizerConfig)
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)
    localization: "LocalizationConfig" = field(default_factory=lambda: LocalizationConfig())

    @classmethod
    def from_dict(cls, values: dict) -> "PipelineConfig":
        """Sections from a nested dict (a merged preset); unknown sections and keys raise."""
        values = dict(values or {})
        name = values.pop("name", "")
        for key in values:
            if key not in SECTIONS:
                raise PramlocError(f"unknown config section {key!r}{_closest(str(key), [*SECTIONS, 'name'])}")
        return cls(name=str(name), **{k: SECTIONS[k].from_dict(v, k) for k, v in values.items()})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


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


def _preset_overrides(preset: str | Path) -> dict:
    """The overrides of a preset name (``indoor``/``outdoor``) or YAML file, with those of
    the ``base`` preset it names (if any) underneath."""
    path = Path(preset)
    if not path.suffix:
        path = CONFIG_DIR / f"{preset}.yaml"
        if not path.exists():
            raise PramlocError(f"unknown config preset {preset!r} (known: {', '.join(PRESETS)})")
    conf = _read_yaml(path)
    if "base" in conf:
        conf = deep_merge(_preset_overrides(conf.pop("base")), conf)
    return conf


def load_config(preset: str | Path = "indoor", overrides: dict | list[str] | None = None) -> PipelineConfig:
    """The defaults, updated by a preset (name or YAML path), then by ``overrides``
    (nested dict or ``section.key=value`` strings)."""
    if isinstance(overrides, (list, tuple)):
        overrides = parse_overrides(overrides)
    return PipelineConfig.from_dict(deep_merge(_preset_overrides(preset), overrides or {}))


def _section_values(section: str, overrides: dict | list[str] | None) -> dict:
    """The settings of ``section`` given as ``key=value`` (or ``section.key=value``) strings
    or a dict, parsed as :func:`load_config` parses them (not checked)."""
    if isinstance(overrides, (list, tuple)):
        overrides = parse_overrides(overrides)
    overrides = dict(overrides or {})
    nested = overrides.pop(section, {})
    return deep_merge(overrides, nested) if isinstance(nested, dict) else nested


def _section_config(cls: type[StageConfig], section: str, overrides: dict | list[str] | None) -> StageConfig:
    """``cls`` from ``key=value`` (or ``section.key=value``) strings or a dict, through the
    same parsing and checks as :func:`load_config`."""
    return cls.from_dict(_section_values(section, overrides), section)


def localization_overrides(overrides: dict | list[str] | None = None) -> dict:
    """The localization settings given (``key=value`` or ``localization.key=value`` strings,
    or a dict), checked as :func:`load_config` checks them, as a dict of those keys
    only: a :class:`~pramloc.localize.Localizer` takes the others from its map's preset."""
    values = _section_values("localization", overrides)
    conf = LocalizationConfig.from_dict(values, "localization")
    return {k: getattr(conf, k) for k in values}


def parse_overrides(items: list[str]) -> dict:
    """``["section.key=value", ...]`` -> nested dict (values parsed as YAML)."""
    out: dict = {}
    for item in items:
        if "=" not in item:
            raise PramlocError(f"override {item!r} must be 'section.key=value'")
        key, value = item.split("=", 1)
        d = out
        parts = key.strip().split(".")
        for p in parts[:-1]:
            d = d.setdefault(p, {})
            if not isinstance(d, dict):
                raise PramlocError(f"override {item!r}: {p!r} is not a section")
        d[parts[-1]] = yaml.safe_load(value)
    return out
