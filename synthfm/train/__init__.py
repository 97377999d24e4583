"""Stage 2, train: fit the prompt encoder + mask decoder from scratch on synthetic images (Dice loss)."""
from synthfm.train.trainer import TrainConfig, Trainer, train

__all__ = ["TrainConfig", "Trainer", "train"]
