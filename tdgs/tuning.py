"""Hyperparameter search with Optuna through Hydra's sweeper plugin (``hparams_search=optuna``):
what a pooler searches beside the learning rate and weight decay that every pooler searches."""

from __future__ import annotations

from omegaconf import DictConfig


def search_space(cfg: DictConfig, trial) -> None:
    """TDGS also searches its initial temperature t0 and its temperatures' learning-rate scale
    (log-uniform over the ranges the deck's and our studies span); the other poolers have nothing
    more to tune (``custom_search_space`` of the Optuna sweeper: called for every trial)."""
    if cfg.pooler.name == "tdgs":
        trial.suggest_float("pooler.t0", 0.05, 2.0, log=True)
        trial.suggest_float("trainer.theta_lr_scale", 1.0, 100.0, log=True)
