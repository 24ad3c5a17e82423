"""Typed stage configurations: defaults in one place, presets as overrides, strict keys."""

from __future__ import annotations

import pytest

from pramloc.config import (SECTIONS, LocalizationConfig, PipelineConfig, RecognizerConfig, load_config,
                            localization_overrides, parse_overrides)
from pramloc.errors import PramlocError


def test_indoor_is_the_defaults_and_outdoor_overrides_them():
    """Indoor is the defaults but for its localization settings (outdoor keeps those)."""
    indoor, outdoor = load_config("indoor"), load_config("outdoor")
    assert {**indoor.to_dict(), "localization": None} == {**PipelineConfig().to_dict(), "name": "indoor",
                                                          "localization": None}
    assert outdoor.features.max_side == 1600 and outdoor.triangulation.max_pair_distance is None
    assert outdoor.recognizer == indoor.recognizer and outdoor.retrieval.top_k == 5
    assert set(PipelineConfig().to_dict()) == {"name", *SECTIONS}


def test_overrides_are_checked_with_a_suggestion():
    conf = load_config("indoor", ["landmarks.num_landmarks=64", "recognizer.augment={scale: 0.5}"])
    assert conf.landmarks.num_landmarks == 64
    assert conf.recognizer.augment["scale"] == 0.5 and conf.recognizer.augment["rotation"] == 15.0  # merged
    with pytest.raises(PramlocError, match=r"'landmarks.num_landmark'.*did you mean 'landmarks.num_landmarks'"):
        load_config("indoor", ["landmarks.num_landmark=64"])
    with pytest.raises(PramlocError, match=r"section 'landmark'.*did you mean 'landmarks'"):
        load_config("indoor", ["landmark.num_landmarks=64"])
    with pytest.raises(PramlocError, match=r"'landmarks.num_landmarks' must be int, got 'many'"):
        load_config("indoor", ["landmarks.num_landmarks=many"])
    with pytest.raises(PramlocError, match=r"'features.max_side' must be"):
        load_config("indoor", ["features.max_side=true"])
    with pytest.raises(PramlocError, match="section.key=value"):
        parse_overrides(["landmarks.num_landmarks"])
    assert load_config("indoor", ["triangulation.max_pair_distance=2"]).triangulation.max_pair_distance == 2
    assert load_config("indoor", ["recognizer.patience=null"]).recognizer.patience is None


def test_localization_overrides_share_the_mechanism():
    assert LocalizationConfig(**localization_overrides(["min_inliers=20", "localization.ratio=0.8"])) == LocalizationConfig(
        min_inliers=20, ratio=0.8)
    assert LocalizationConfig.of(None) == LocalizationConfig()
    with pytest.raises(PramlocError, match=r"'localization.min_inlier'.*did you mean 'localization.min_inliers'"):
        localization_overrides(["min_inlier=20"])
    with pytest.raises(PramlocError, match=r"'recognizer.widht'.*'recognizer.width'"):
        RecognizerConfig.from_dict({"widht": 3}, "recognizer")


def test_presets_carry_localization_settings():
    """The indoor preset's localization settings differ from the defaults (kept for outdoor);
    ``localization_overrides`` gives only the keys given, checked."""
    assert load_config("indoor").localization == LocalizationConfig(recognition_keypoints=256,
                                                                     landmark_visibility=0.8, match_keypoints=768)
    assert load_config("outdoor").localization == LocalizationConfig()
    assert load_config("indoor", ["localization.hypotheses=3"]).localization.hypotheses == 3
    assert localization_overrides(["min_inliers=20", "localization.ratio=0.8"]) == {"min_inliers": 20, "ratio": 0.8}
    assert localization_overrides([]) == {}
    with pytest.raises(PramlocError, match=r"'localization.min_inlier'.*did you mean 'localization.min_inliers'"):
        localization_overrides(["min_inlier=20"])


def test_yaml_preset_file_and_unknown_preset(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("base: outdoor\nretrieval:\n  top_k: 3\n")
    conf = load_config(path)
    assert conf.retrieval.top_k == 3 and conf.features.max_side == 1600
    with pytest.raises(PramlocError, match="unknown config preset"):
        load_config("underwater")
    path.write_text("- a list\n")
    with pytest.raises(PramlocError, match="must be a mapping"):
        load_config(path)
