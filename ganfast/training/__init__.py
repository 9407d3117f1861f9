"""The training engine: the loop (Trainer, TrainingConfig), losses, regularizers, EMA, mixed
precision, checkpoints, multi-process training, and the runs `ganfast train` drives.

    from ganfast.training import Trainer, TrainingConfig
    trainer = Trainer(G, D, dataset, TrainingConfig(loss="hinge", batch=64), run_dir="runs/x")
    trainer.train(kimg=100, snap_steps=1000)
"""
from ganfast.training.loop import TRAINING_LOSSES, NonFiniteError, Trainer, TrainingConfig
from ganfast.training.recipes import FAMILY_RECIPES, recipe_for

__all__ = ["Trainer", "TrainingConfig", "NonFiniteError", "TRAINING_LOSSES", "FAMILY_RECIPES", "recipe_for"]
