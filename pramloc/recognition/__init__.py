"""Landmark recognition (PRAM-style): a transformer labels each keypoint of an image with a
landmark of the map or background; landmark votes rank the landmarks seen in the image.

- :mod:`.data`: :class:`TrainingImage` (labelled keypoints of a map image), augmentation, batching.
- :mod:`.model`: :class:`LandmarkTransformer`, :class:`Recognizer` (inference, checkpoint I/O).
- :mod:`.supervision`: training labels of the map images (from the map's points and poses).
- :mod:`.train`: :class:`~.train.Trainer`; ``main(conf, train_images, num_landmarks, out_path)``
  trains and saves.
"""

from .data import TrainingImage
from .model import LandmarkTransformer, RecognitionResult, Recognizer

__all__ = ["TrainingImage", "LandmarkTransformer", "RecognitionResult", "Recognizer"]
