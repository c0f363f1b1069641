"""``colorvid train``: the colorizer, its previous-frame head and its confidence head.

- :mod:`~colorvid.training.options`: :class:`TrainOptions`, shared by all three trainers;
- :mod:`~colorvid.training.data`: finding and loading images and video frames, the
  train/validation split, random crops and runs of consecutive frames;
- :mod:`~colorvid.training.loop`: the one loop they all run (checkpoint and resume,
  learning-rate schedule, epochs, validation, best.safetensors, history.json);
- :mod:`~colorvid.training.colorizer`: the colorizer (:func:`train`);
- :mod:`~colorvid.training.temporal`: the previous-frame head (:func:`train_previous_frame`);
- :mod:`~colorvid.training.confidence`: the confidence head (:func:`train_confidence`).
"""

from colorvid.training.colorizer import train
from colorvid.training.confidence import train_confidence
from colorvid.training.options import TrainOptions
from colorvid.training.temporal import train_previous_frame

__all__ = ["TrainOptions", "train", "train_confidence", "train_previous_frame"]
