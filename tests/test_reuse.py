"""reuse=FOLDER (how scripts/reproduce.sh trains each configuration and seed once): a completed run
of the same configuration and seed below FOLDER is copied instead of trained again; any other one
is trained."""

import pandas as pd
from conftest import SMALL_RUN, compose_config

import tdgs.train
from tdgs.train import train

RUN = [*SMALL_RUN, "pooler=tdgs", "device=cpu"]


def test_a_repeated_configuration_is_copied_not_trained(tmp_path, monkeypatch):
    first = train(compose_config(*RUN), tmp_path / "a" / "run")
    trained = []
    real = tdgs.train.set_up
    monkeypatch.setattr(tdgs.train, "set_up", lambda *args: trained.append(1) or real(*args))
    reuse = f"reuse={tmp_path}"
    copy = train(compose_config(*RUN, reuse, "trainer.compile=none"), tmp_path / "b" / "run")  # not what is computed
    assert not trained and copy["copied_from"] == str((tmp_path / "a" / "run").resolve())
    assert copy["test_acc_at_best_val"] == first["test_acc_at_best_val"]
    for name in ("metrics.csv", "temperatures.csv", "checkpoint_best.pt"):
        assert (tmp_path / "b" / "run" / name).read_bytes() == (tmp_path / "a" / "run" / name).read_bytes()
    assert not (tmp_path / "b" / "run" / "checkpoint.pt").exists()
    written = pd.read_csv(tmp_path / "b" / "run" / "summary.csv").iloc[0]
    assert written.status == "completed" and written.copied_from == copy["copied_from"]
    for other in (["seed=1"], ["pooler.t0=0.5"], ["trainer.epochs=2"], ["dataset.val_size=0"]):
        train(compose_config(*RUN, reuse, *other), tmp_path / "c" / "_".join(other))
    assert len(trained) == 4  # another seed, option, length or split: trained
    resumed = train(compose_config(*RUN, reuse, "resume=true"), tmp_path / "b" / "run")  # a copy is a completed run
    assert resumed["copied_from"] == copy["copied_from"] and len(trained) == 4
