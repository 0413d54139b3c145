"""Selection on validation: every epoch evaluates the validation split, the summary's selected
result is the test accuracy of the best validation epoch, checkpoint_best.pt holds that epoch's
weights (and survives a resume), early stopping, and what a sweeper is given."""

import logging
import math

import pandas as pd
import pytest
import torch
from conftest import SMALL_RUN, compose_config
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

import tdgs.train
from tdgs.cli import CONF_DIR, train_main
from tdgs.data import load_dataset
from tdgs.data.inputs import Inputs, channel_stats
from tdgs.networks import build_model
from tdgs.train import evaluate, train

RUN = [*SMALL_RUN, "dataset.train_size=400", "trainer.epochs=4", "pooler=max", "device=cpu"]


def test_the_selected_result_is_the_test_accuracy_of_the_best_validation_epoch(tmp_path):
    summary = train(compose_config(*RUN, "dataset.normalize=true"), tmp_path)
    written = pd.read_csv(tmp_path / "summary.csv").iloc[0]
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    assert {"val_loss", "val_acc", "lr"} <= set(metrics) and metrics.val_acc.notna().all()
    best = metrics.loc[metrics.val_acc.idxmax()]  # idxmax: the first of equals, the earliest epoch
    assert written.best_val_epoch == best.epoch and written.best_val_acc == best.val_acc
    assert written.test_acc_at_best_val == best.test_acc and written.val_acc == metrics.val_acc.iloc[-1]
    assert (written.train_size, written.val_size) == (360, 40) and not written.stopped_early
    assert summary["best_val_acc"] == written.best_val_acc
    saved = torch.load(tmp_path / "checkpoint_best.pt", weights_only=True)
    assert saved["epoch"] == best.epoch and saved["val_acc"] == best.val_acc
    data = load_dataset("synthetic", train_size=400, test_size=128, val_size=0.1)
    model = build_model("deck_cnn", "max", data.image_shape, 10)
    model.load_state_dict(saved["model"])
    mean, std = channel_stats(data.train_images)  # the training split's, not train + validation's
    assert torch.allclose(saved["inputs"]["mean"], mean) and torch.allclose(saved["inputs"]["std"], std)
    assert not torch.allclose(mean, channel_stats(torch.cat([data.train_images, data.val_images]))[0], atol=1e-7)
    inputs = Inputs(**saved["inputs"])  # the normalisation the weights expect
    _, val_acc = evaluate(model, data.val_images, data.val_labels, 1000, inputs=inputs)
    assert val_acc == pytest.approx(best.val_acc)  # the best epoch's own weights


def test_ties_go_to_the_earliest_epoch_and_no_validation_gives_nan(tmp_path, monkeypatch):
    _script_validation(monkeypatch, [60.0, 70.0, 70.0, 65.0])
    summary = train(compose_config(*RUN), tmp_path / "ties")
    assert (summary["best_val_epoch"], summary["best_val_acc"]) == (2, 70.0)
    assert torch.load(tmp_path / "ties" / "checkpoint_best.pt", weights_only=True)["epoch"] == 2
    monkeypatch.undo()
    summary = train(compose_config(*RUN, "dataset.val_size=0"), tmp_path / "none")
    assert all(math.isnan(summary[k]) for k in ("val_acc", "best_val_acc", "best_val_epoch", "test_acc_at_best_val"))
    assert pd.read_csv(tmp_path / "none" / "metrics.csv").val_acc.isna().all()
    assert not (tmp_path / "none" / "checkpoint_best.pt").exists()


def _script_validation(monkeypatch, accuracies):
    """The validation accuracy of epoch i is ``accuracies[i - 1]`` (test accuracy computed as usual)."""
    real, left = tdgs.train.evaluate, list(accuracies)

    def scripted(model, images, labels, *args, **kwargs):
        loss, acc = real(model, images, labels, *args, **kwargs)
        is_val = 0 < len(labels) != 128  # the test split has 128 images here; none held out: no validation
        return (loss, left.pop(0)) if is_val else (loss, acc)

    monkeypatch.setattr(tdgs.train, "evaluate", scripted)


def test_early_stopping_stops_and_a_resume_leaves_the_run(tmp_path, monkeypatch, caplog):
    _script_validation(monkeypatch, [50.0, 60.0, 55.0, 59.0, 61.0, 62.0])
    args = [*RUN, "trainer.epochs=6", "trainer.early_stopping_patience=2"]
    summary = train(compose_config(*args), tmp_path)
    assert (summary["status"], summary["epochs_done"], summary["stopped_early"]) == ("completed", 4, True)
    assert summary["best_val_epoch"] == 2 and pd.read_csv(tmp_path / "metrics.csv").epoch.tolist() == [1, 2, 3, 4]
    assert pd.read_csv(tmp_path / "summary.csv").stopped_early[0]
    caplog.set_level(logging.INFO, logger="tdgs")
    train(compose_config(*args, "resume=true"), tmp_path)
    assert "already completed" in caplog.text and pd.read_csv(tmp_path / "metrics.csv").epoch.tolist() == [1, 2, 3, 4]


def test_a_run_stopped_between_its_checkpoint_and_its_best_weights_resumes_them(tmp_path, monkeypatch):
    """The best weights are written after the epoch's checkpoint: a run killed in between has the
    older best on disk, and its resume writes the resumed (best) epoch's weights."""
    _script_validation(monkeypatch, [50.0, 60.0, 70.0, 10.0])
    real = tdgs.train.save_best

    def killed_at_epoch_3(run_dir, state):
        if state["epoch"] == 3:
            raise KeyboardInterrupt
        real(run_dir, state)

    monkeypatch.setattr(tdgs.train, "save_best", killed_at_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        train(compose_config(*RUN), tmp_path)
    assert torch.load(tmp_path / "checkpoint_best.pt", weights_only=True)["epoch"] == 2  # the older best
    monkeypatch.setattr(tdgs.train, "save_best", real)
    summary = train(compose_config(*RUN, "resume=true"), tmp_path)
    saved = torch.load(tmp_path / "checkpoint_best.pt", weights_only=True)
    last = torch.load(tmp_path / "checkpoint.prev.pt", weights_only=True)  # epoch 3's checkpoint
    assert summary["best_val_epoch"] == saved["epoch"] == last["epoch"] == 3
    assert all(torch.equal(saved["model"][k], last["model"][k]) for k in saved["model"])


def test_best_weights_of_an_epoch_a_resume_drops_are_removed(tmp_path, monkeypatch):
    """A damaged last checkpoint makes a resume fall back to the epoch before it: best weights
    written by the dropped epoch are no weights of this run any more."""
    _script_validation(monkeypatch, [50.0, 60.0, 70.0])
    train(compose_config(*RUN, "trainer.epochs=3"), tmp_path)
    assert torch.load(tmp_path / "checkpoint_best.pt", weights_only=True)["epoch"] == 3
    epoch_2 = torch.load(tmp_path / "checkpoint.prev.pt", weights_only=True)["model"]
    (tmp_path / "checkpoint.pt").write_bytes(b"damaged")
    monkeypatch.undo()
    _script_validation(monkeypatch, [55.0])  # epoch 3 again, worse than epoch 2 this time
    summary = train(compose_config(*RUN, "trainer.epochs=3", "resume=true"), tmp_path)
    saved = torch.load(tmp_path / "checkpoint_best.pt", weights_only=True)
    assert summary["best_val_epoch"] == saved["epoch"] == 2
    assert all(torch.equal(saved["model"][k], epoch_2[k]) for k in epoch_2)


def test_a_sweeper_is_given_the_best_validation_accuracy_never_test(tmp_path, monkeypatch):
    _script_validation(monkeypatch, [41.0, 42.5])
    for extra, expect_nan in (([], False), (["dataset.val_size=0"], True)):
        with initialize_config_dir(version_base="1.3", config_dir=CONF_DIR):
            overrides = [*RUN, "trainer.epochs=2", *extra, f"hydra.run.dir={tmp_path / str(expect_nan)}"]
            cfg = compose("config", overrides=overrides, return_hydra_config=True)
        cfg.hydra.runtime.output_dir = str(tmp_path / str(expect_nan))  # what a launcher sets
        HydraConfig.instance().set_config(cfg)
        task = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])  # what Hydra hands the task function
        try:
            returned = train_main.__wrapped__(task)  # as a sweeper's launcher calls it
        finally:
            HydraConfig.instance().cfg = None
        summary = pd.read_csv(tmp_path / str(expect_nan) / "summary.csv").iloc[0]
        if expect_nan:
            assert math.isnan(returned)
        else:
            assert returned == summary.best_val_acc == 42.5  # the scripted validation accuracy of epoch 2
