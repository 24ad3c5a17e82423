"""Recognizer supervision: landmark labels of the map images' keypoints and the map points
visible in each image, then the :class:`TrainingImage` list the trainer takes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..geometry import Camera, Pose
from ..landmarks import _labels_near as labels_near
from ..landmarks import visible_points
from .data import TrainingImage


@dataclass
class TrainingLabels:
    """Recognizer supervision of the map images (lists indexed like the images).

    - ``labels[i]`` (N_i,) int64 keypoint labels (0 = background, l + 1 = landmark l);
    - ``points_xy[i]`` (M_i, 2) float32 pixels and ``points_landmark[i]`` (M_i,) int64:
      the map points visible in image i (targets of the landmark-visibility head).
    """

    labels: list[np.ndarray]
    points_xy: list[np.ndarray]
    points_landmark: list[np.ndarray]


def training_labels(xyz: np.ndarray, point_landmark: np.ndarray, keypoints: list[np.ndarray], cameras: list[Camera],
                    poses: list[Pose], radius: float = 3.0) -> TrainingLabels:
    """Recognizer training labels of the map images: :func:`pramloc.landmarks.projected_labels`, the rule of
    the query ground truth of the benchmark, on the map's triangulated points (P, 3).

    Every keypoint within ``radius`` px of a visible projected point takes the landmark of
    the nearest one, observed (triangulated from this keypoint) or not. Labelling observed
    keypoints with their own point's landmark instead disagrees with this rule on about a
    third of them (7-Scenes: hidden by a nearer point of their 8 px cell, or nearer to
    another point's projection), and a model taught one rule and scored on the other
    loses about 4 points of keypoint accuracy on queries.
    """
    labels, pxy, plm = [], [], []
    for kp, cam, pose in zip(keypoints, cameras, poses):
        uv, lm = visible_points(cam, pose, xyz, point_landmark)
        labels.append(labels_near(uv, lm, kp, radius))
        pxy.append(uv.astype(np.float32))
        plm.append(lm.astype(np.int64))
    return TrainingLabels(labels, pxy, plm)


def training_images(feats: list[dict], names: list[str], sup: TrainingLabels) -> list[TrainingImage]:
    """Recognizer training data: every keypoint of every map image (features dicts as read
    by :func:`pramloc.io.read_features`) with its label, and the map points visible in it."""
    return [TrainingImage(name=n, keypoints=f["keypoints"], descriptors=f["descriptors"], labels=lab,
                          image_size=(int(f["image_size"][0]), int(f["image_size"][1])),
                          points_xy=pxy, points_landmark=plm)
            for n, f, lab, pxy, plm in zip(names, feats, sup.labels, sup.points_xy, sup.points_landmark)]
