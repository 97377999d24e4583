"""Stage 2, train: fit the prompt encoder + mask decoder from scratch on synthetic images (Dice loss),
optionally fine-tuning on the user's own labelled volumes mixed with synthetic data."""
from synthfm.train.trainer import TrainConfig, Trainer, train
from synthfm.train.user_data import UserCase, cases_from_csv

__all__ = ["TrainConfig", "Trainer", "UserCase", "cases_from_csv", "train"]
