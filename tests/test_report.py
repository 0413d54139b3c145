"""tdgs-report: statistics against scipy, the report over folders of a real small sweep and more runs,
and corrupt, incomplete and failed runs listed instead of dropped or crashing."""

import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import compose_config
from omegaconf import OmegaConf
from scipy import stats

from tdgs.report.collect import DUPLICATES, collect, default_runs, validation_label
from tdgs.report.main import build_report
from tdgs.report.stats import cell, mean_std, welch
from tdgs.train import train

BIN = Path(sys.executable).parent
SMALL = [
    "dataset=synthetic",
    "dataset.train_size=256",
    "dataset.test_size=128",
    "trainer.epochs=2",
    "trainer.progress=false",
]


def test_welch_matches_scipy():
    a = np.array([99.1, 99.3, 99.0, 99.4, 99.2])
    b = np.array([98.9, 99.0, 98.7, 99.1])
    got = welch(a, b)
    ref = stats.ttest_ind(a, b, equal_var=False)
    low, high = ref.confidence_interval(0.95)
    assert got["diff"] == pytest.approx(a.mean() - b.mean())
    assert (got["ci_low"], got["ci_high"]) == (pytest.approx(low), pytest.approx(high))
    assert got["p"] == pytest.approx(ref.pvalue)
    # known numbers: means 99.2 and 98.925
    assert got["diff"] == pytest.approx(0.275)


@pytest.mark.parametrize(
    ("a", "b"),
    [([90.0, 91.0], [89.0, 89.5]), ([91.0, 92.0, 93.0], [90.0, 91.0, 92.0]), ([90.0, 90.0, 90.0], [89.0, 90.0, 91.0])],
    ids=["two-each", "equal-spread", "one-group-without-spread"],
)
def test_welch_is_scipys_from_two_values_each_and_whenever_one_group_varies(a, b):
    got, ref = welch(a, b), stats.ttest_ind(a, b, equal_var=False)
    low, high = ref.confidence_interval(0.95)
    assert (got["ci_low"], got["ci_high"]) == (pytest.approx(low), pytest.approx(high))
    assert got["p"] == pytest.approx(ref.pvalue)


def test_statistics_of_tiny_groups_are_nan_not_errors():
    for a, b in [([99.0], [98.0, 98.5]), ([98.0, 98.5], [99.0]), ([1.0, 1.0], [1.0, 1.0])]:  # no spread: no interval
        got = welch(a, b)
        assert set(got) == {"diff", "ci_low", "ci_high", "p"} and got["diff"] == pytest.approx(np.mean(a) - np.mean(b))
        assert all(math.isnan(got[key]) for key in ("ci_low", "ci_high", "p"))
    mean, std, n = mean_std([97.5])
    assert (mean, n) == (97.5, 1) and math.isnan(std)


def test_a_cell_is_mean_std_and_n_and_a_single_run_has_no_std():
    assert cell(91.234, 0.456, 5) == "91.23 ± 0.46 (5)"
    assert cell(91.234, math.nan, 1) == cell(91.234, 0.0, 1) == "91.23 (1)"
    assert cell(math.nan, math.nan, 0) == ""


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A real sweep (max and TDGS, two seeds) and more runs trained in this process into the folders
    a sweep gives them (TDGS at another t0; a repeat from another experiment; faster temperatures),
    plus broken folders beside them."""
    root = tmp_path_factory.mktemp("sweep")
    env = {**os.environ, "TDGS_DATA_DIR": str(root / "data")}
    args = [*SMALL, "pooler=max,tdgs", "seed=0,1", f"hydra.sweep.dir={root / 'runs'}"]
    done = subprocess.run(
        [BIN / "tdgs-train", "-m", *args], cwd=root, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    experiments = {  # folder: each job's overrides, in the sweep's order
        "runs_t0": [["pooler.t0=0.5", f"seed={seed}"] for seed in (0, 1)],
        "runs_repeat": [["seed=0"]],  # TDGS's defaults, seed 0, again
        "runs_lr": [["trainer.theta_lr_scale=100", f"seed={seed}"] for seed in (0, 1)],
    }
    for folder, jobs in experiments.items():
        for number, overrides in enumerate(jobs):
            cfg = compose_config(*SMALL, "pooler=tdgs", *overrides)
            summary = train(cfg, root / folder / f"{number}_synthetic_tdgs_seed{cfg.seed}")
            assert summary["status"] == "completed"
    broken = root / "runs" / "broken"
    runs = sorted(p.parent for p in (root / "runs").glob("*/summary.csv"))
    # corrupt: a summary that is not CSV
    (broken / "corrupt").mkdir(parents=True)
    (broken / "corrupt" / "summary.csv").write_bytes(b"\x00\x01garbage")
    # incomplete: killed before its summary (only metrics so far)
    (broken / "killed").mkdir()
    (broken / "killed" / "metrics.csv").write_text((runs[0] / "metrics.csv").read_text())
    # failed: a summary saying so
    (broken / "failed").mkdir()
    failed = pd.read_csv(runs[0] / "summary.csv").assign(status="failed", error="RuntimeError: loss is nan")
    failed.to_csv(broken / "failed" / "summary.csv", index=False)
    (broken / "failed" / "metrics.csv").write_text((runs[0] / "metrics.csv").read_text())
    # completed but its metrics were truncated to nothing
    (broken / "empty_metrics").mkdir()
    (broken / "empty_metrics" / "summary.csv").write_text((runs[0] / "summary.csv").read_text())
    (broken / "empty_metrics" / "metrics.csv").write_text("")
    return root


def test_collect_keeps_every_problem_with_its_reason(sweep):
    runs = collect([sweep])
    assert len(runs.summaries) == 8  # 4 + 2 + 2 completed runs, and a repeat counted once
    problems = dict(zip(runs.problems.folder.map(lambda f: Path(f).name), runs.problems.problem))
    assert set(problems) == {"corrupt", "killed", "failed", "empty_metrics"}
    assert problems["corrupt"].startswith("unreadable summary.csv")
    assert problems["killed"].startswith("no summary.csv")
    assert problems["failed"] == "status failed: RuntimeError: loss is nan"
    assert "metrics.csv unreadable" in problems["empty_metrics"]


def test_a_configuration_and_seed_counts_once_however_many_experiments_ran_it(sweep):
    runs = collect([sweep])
    assert not runs.summaries.duplicated(["configuration", "seed"]).any()
    assert len(runs.duplicates) == 1
    for table in (runs.summaries, runs.duplicates):  # numbered afresh, no column of the old numbers
        assert list(table.index) == list(range(len(table))) and "index" not in table
    assert set(runs.metrics.folder) == set(runs.summaries.folder)  # each counted run's epochs, no others
    assert runs.metrics.index.is_unique and runs.temperatures.index.is_unique  # one row, one label
    assert set(runs.temperatures.folder) == set(runs.summaries.folder[runs.summaries.pooler == "tdgs"])
    repeat = runs.duplicates.iloc[0]
    assert "runs_repeat" in repeat.folder and f"{os.sep}runs{os.sep}" in repeat.kept and "tdgs_seed0" in repeat.kept
    assert repeat.test_acc == repeat.kept_test_acc  # the same computation on the CPU
    assert repeat.folder not in set(runs.metrics.folder) | set(runs.temperatures.folder)
    # other options with the same seed are other configurations: t0 = 0.5, theta_lr_scale = 100
    assert len(runs.summaries[(runs.summaries.pooler == "tdgs") & (runs.summaries.seed == 0)]) == 3


def test_an_older_config_yaml_still_merges_and_a_run_without_one_never_does(sweep, tmp_path):
    """What a config.yaml or summary.csv from before an option lacks is what such a run had: today's
    default, no validation split, inputs not normalized; a run without config.yaml is counted alone."""
    original = next(p for p in (sweep / "runs").glob("*tdgs_seed0"))
    names = ("older", "bare", "resnet", "longer")
    for name in (*names, "unvalidated", "unvalidated_older", "unvalidated_blank", "unvalidated_cifar"):
        shutil.copytree(original, tmp_path / name, ignore=shutil.ignore_patterns("checkpoint*"))

    def rewrite(name, drop=(), summary=None, **values):  # values: {"dataset.val_size": 0, ...}
        config = OmegaConf.load(tmp_path / name / "config.yaml")
        for key in drop:
            group, _, option = key.partition(".")
            del (config[group] if option else config)[option or group]
        for key, value in values.items():
            OmegaConf.update(config, key, value)
        OmegaConf.save(config, tmp_path / name / "config.yaml")
        if summary is not None:
            summary(pd.read_csv(original / "summary.csv")).to_csv(tmp_path / name / "summary.csv", index=False)

    # written before these options existed
    rewrite("older", drop=("pooler.padding", "trainer.theta_lr_scale", "dataset.geometry", "model"))
    rewrite("resnet", **{"model.name": "resnet18"})
    rewrite("longer", **{"trainer.epochs": 3})
    (tmp_path / "bare" / "config.yaml").unlink()
    rewrite("unvalidated", **{"dataset.val_size": 0}, summary=lambda s: s.assign(val_size=0))  # as such a run writes it
    before_validation = ("dataset.val_size", "dataset.split_seed", "dataset.normalize")
    rewrite("unvalidated_older", drop=before_validation, summary=lambda s: s.drop(columns="val_size"))
    rewrite("unvalidated_blank", drop=before_validation, summary=lambda s: s.assign(val_size=math.nan))
    cifar = {"dataset.val_size": 0, "dataset.geometry": "cifar10"}
    rewrite("unvalidated_cifar", **cifar, summary=lambda s: s.assign(val_size=0))
    runs = collect([original.parent, tmp_path])
    merged = sorted(runs.duplicates.folder.map(lambda f: Path(f).name))
    assert merged == ["older", "unvalidated_blank", "unvalidated_older"]
    assert {str(tmp_path / name) for name in ("bare", "resnet", "longer", "unvalidated", "unvalidated_cifar")} <= set(
        runs.summaries.folder
    )  # no configuration to tell, another network or length, the first of its kind, other images


def test_a_validation_split_is_its_images_not_how_it_was_asked_for(sweep, tmp_path):
    """val_size as a fraction or as its count is one split; without one, split_seed means nothing."""
    original = next(p for p in (sweep / "runs").glob("*tdgs_seed0"))
    held_out = int(pd.read_csv(original / "summary.csv").val_size[0])
    variants = {"count": {"val_size": held_out}, "none_a": {"val_size": 0}, "none_b": {"val_size": 0, "split_seed": 1}}
    for name, values in variants.items():
        shutil.copytree(original, tmp_path / name, ignore=shutil.ignore_patterns("checkpoint*"))
        config = OmegaConf.load(tmp_path / name / "config.yaml")
        config.dataset.update(values)
        OmegaConf.save(config, tmp_path / name / "config.yaml")
        if values["val_size"] == 0:  # as such a run writes it
            pd.read_csv(original / "summary.csv").assign(val_size=0).to_csv(
                tmp_path / name / "summary.csv", index=False
            )
    runs = collect([original.parent, tmp_path])
    assert sorted(runs.duplicates.folder.map(lambda f: Path(f).name)) == ["count", "none_b"]


def test_report_writes_every_table_and_figure(sweep, tmp_path):
    out = tmp_path / "report"
    done = subprocess.run(
        [BIN / "tdgs-report", str(sweep), "--out", str(out)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    report = (out / "report.md").read_text()
    assert report in done.stdout
    for section in (
        "The deck's table",
        "initial temperature t0",
        "All poolers",
        "Learned temperatures",
        "Every configuration",
        "Problems",
    ):
        assert section in report
    for name in ("corrupt", "killed", "failed", "empty_metrics"):
        assert f"broken/{name}" in report
    deck = pd.read_csv(out / "deck_table.csv")
    assert set(deck.pooler) == {"max", "tdgs"} and (deck.n == 2).all()  # seeds 0, 1: the repeat and lr 100 not in
    assert "1 more run repeated the configuration and seed" in report and len(pd.read_csv(out / "duplicates.csv")) == 1
    tdgs = deck.set_index("pooler").loc["tdgs"]
    runs = collect([sweep]).summaries
    default = (runs.t0.fillna(1.0) == 1.0) & (runs.theta_lr_scale == 1.0)
    accs = {p: runs[(runs.pooler == p) & default].test_acc_at_best_val.to_numpy() for p in ("max", "tdgs")}
    assert tdgs["diff"] == pytest.approx(accs["tdgs"].mean() - accs["max"].mean())  # selected on validation
    assert "*Test accuracy at each run's best validation epoch" in report and "final epoch's test accuracy" in report
    t_init = pd.read_csv(out / "temperature_init.csv")
    assert sorted(t_init.t0) == [0.5, 1.0] and t_init.best.sum() >= 1
    t_lr = pd.read_csv(out / "temperature_lr.csv")
    assert t_lr.theta_lr_scale.tolist() == [1.0, 100.0] and t_lr.n.tolist() == [2, 2]
    temps = pd.read_csv(out / "learned_temperatures.csv")
    assert sorted(temps.layer) == [1, 1, 2, 2, 3, 3] and sorted(set(temps.theta_lr_scale)) == [1.0, 100.0]
    assert ((temps.share_below_1 + temps.share_above_1) <= 1 + 1e-9).all() and (temps.runs == 2).all()
    moved = temps.groupby("theta_lr_scale").share_moved.mean()
    assert moved[1.0] < 0.05 < 0.5 < moved[100.0]  # T barely moves at the network's rate, a lot at 100x
    assert len(pd.read_csv(out / "problems.csv")) == 4
    figures = ("training_curves.png", "accuracy_vs_t0.png", "temperatures_synthetic_2ep_val26of256.png")
    for figure in (*figures, "temperature_trajectory_synthetic_2ep_val26of256.png"):
        assert (out / figure).stat().st_size > 10_000


def test_the_best_override_is_chosen_on_validation(sweep):
    from tdgs.report.main import best_override, main

    runs = collect([sweep / "runs"]).summaries
    means = runs.groupby("pooler").best_val_acc.mean()
    assert best_override([sweep / "runs"], "pooler") == means.idxmax()  # the sweep's pooler=max,tdgs
    assert main([str(sweep / "runs_t0"), "--best-override", "pooler"]) == 2  # trained in-process: no overrides.yaml


def test_temperatures_csv_keeps_the_initial_draw_and_the_report_the_change(sweep):
    runs = collect([sweep])
    t = runs.temperatures.merge(runs.summaries[["folder", "t0"]], on="folder")
    drawn = (t.initial - 0.1) / t.t0  # T = relu(theta) + eps, theta = t0 * U(0.5, 1.5), eps 0.1
    assert drawn.between(0.5, 1.5).all() and drawn.std() == pytest.approx(1 / 12**0.5, rel=0.05)
    assert set(t.t0) == {0.5, 1.0}
    from tdgs.report.tables import learned_temperatures

    learned = learned_temperatures(runs)  # default options, any theta_lr_scale: not the t0 = 0.5 runs
    assert learned.initial.between(0.6, 1.6).all() and learned.folder.nunique() == 4
    assert np.allclose(learned.change, learned.temperature - learned.initial)


def test_report_on_nothing_says_so(tmp_path):
    report = build_report([tmp_path], tmp_path / "report")
    assert "0 completed runs" in report and "(no runs)" in report
    runs = collect([tmp_path])  # empty tables, with their columns
    assert list(runs.problems) == ["folder", "problem"] and list(runs.duplicates) == list(DUPLICATES)


def test_report_refuses_a_missing_folder(tmp_path):
    done = subprocess.run([BIN / "tdgs-report", str(tmp_path / "nope")], capture_output=True, text=True)
    assert done.returncode == 2 and "not a folder" in done.stderr and "Traceback" not in done.stderr


def test_runs_of_different_networks_are_never_pooled(tmp_path):
    """Each (dataset, model, epochs) is a setting of its own; the deck's numbers sit beside the
    deck's CNN only; a summary.csv from before model= existed counts as the deck's CNN."""
    rows = [
        ("deck_cnn", "max", 98.0),
        ("deck_cnn", "tdgs", 99.0),
        ("resnet18", "max", 90.0),
        ("resnet18", "tdgs", 91.0),
    ]
    for i, (model, pooler, acc) in enumerate(rows * 2):
        folder = tmp_path / f"run{i}"
        folder.mkdir()
        summary = {
            "dataset": "mnist",
            "model": model,
            "pooler": pooler,
            "seed": i,
            "epochs": 10,
            "test_acc": acc + i / 10,
            "status": "completed",
        }
        if model == "deck_cnn" and i >= 4:
            del summary["model"]  # an old run
        pd.DataFrame([summary]).to_csv(folder / "summary.csv", index=False)
        pd.DataFrame([{"epoch": 10, "test_acc": acc}]).to_csv(folder / "metrics.csv", index=False)
        pd.DataFrame([{"layer": 1, "channel": 0, "row": 0, "col": 0, "temperature": 1.0}]).to_csv(
            folder / "temperatures.csv", index=False
        )
    from tdgs.report.plots import temperature_histograms
    from tdgs.report.tables import all_poolers_table, deck_table

    numbers, _ = all_poolers_table(collect([tmp_path]))
    assert list(zip(numbers.model, numbers.pooler, numbers.n)) == [
        ("deck_cnn", "max", 2),
        ("deck_cnn", "tdgs", 2),
        ("resnet18", "max", 2),
        ("resnet18", "tdgs", 2),
    ]
    assert numbers.set_index(["model", "pooler"]).loc[("resnet18", "tdgs"), "diff"] == pytest.approx(91.5 - 90.4)
    numbers, text = deck_table(collect([tmp_path]))
    assert numbers.deck.tolist()[:2] == [98.96, 99.24] and numbers.deck.iloc[2:].isna().all()
    assert "resnet18" in text
    figures = temperature_histograms(collect([tmp_path]), tmp_path)  # one figure per network, none overwritten
    assert sorted(p.name for p in figures) == ["temperatures_mnist_10ep.png", "temperatures_mnist_resnet18_10ep.png"]


def test_the_ablation_compares_each_combination_with_tdgs_defaults(tmp_path):
    accuracy = {("l2", "expectation"): [90.0, 91.0, 92.0], ("none", "sample"): [93.0, 94.0, 95.5]}
    for (normalize, eval_mode), accs in accuracy.items():
        for seed, acc in enumerate(accs):
            folder = tmp_path / f"{normalize}_{eval_mode}_{seed}"
            folder.mkdir()
            summary = {"dataset": "mnist", "pooler": "tdgs", "t0": 1.0, "normalize": normalize, "eval_mode": eval_mode}
            summary |= {"granularity": "position", "seed": seed, "epochs": 10, "test_acc": acc, "status": "completed"}
            pd.DataFrame([summary]).to_csv(folder / "summary.csv", index=False)
            pd.DataFrame([{"epoch": 10, "test_acc": acc}]).to_csv(folder / "metrics.csv", index=False)
            pd.DataFrame([{"layer": 1, "channel": 0, "row": 0, "col": 0, "temperature": 1.0}]).to_csv(
                folder / "temperatures.csv", index=False
            )
    from tdgs.report.tables import ablation_table

    numbers, text = ablation_table(collect([tmp_path]))
    rows = numbers.set_index(["normalize", "eval_mode"])
    assert math.isnan(rows.loc[("l2", "expectation"), "diff"])  # the defaults, not compared with themselves
    other = rows.loc[("none", "sample")]
    expected = stats.ttest_ind(accuracy["none", "sample"], accuracy["l2", "expectation"], equal_var=False)
    assert other["diff"] == pytest.approx(94.1666666 - 91.0) and other["p"] == pytest.approx(expected.pvalue)
    assert other["best"] and not rows.loc[("l2", "expectation"), "best"] and "**best**" in text


def _write_run(folder, **summary):
    folder.mkdir(parents=True)
    row = {"dataset": "mnist", "pooler": "tdgs", "t0": 1.0, "seed": 0, "epochs": 10, "status": "completed"} | summary
    pd.DataFrame([row]).to_csv(folder / "summary.csv", index=False)
    pd.DataFrame([{"epoch": 10, "test_acc": row["test_acc"]}]).to_csv(folder / "metrics.csv", index=False)
    pd.DataFrame([{"layer": 1, "channel": 0, "row": 0, "col": 0, "temperature": 1.0}]).to_csv(
        folder / "temperatures.csv", index=False
    )


def test_best_marks_are_chosen_on_validation_and_say_so_without_it(tmp_path):
    """t0 = 0.5 wins on test, t0 = 2 on validation: with a validation split the mark goes to 2;
    runs without one (older runs, val_size=0) are a setting of their own, marked by test accuracy."""
    split = {"val_size": 100, "train_size": 900}
    for seed in range(2):
        for t0, test, val in ((0.5, 95.0, 80.0), (2.0, 90.0, 85.0)):
            _write_run(tmp_path / "val" / f"{t0}_{seed}", t0=t0, seed=seed, test_acc=test + seed, **split,
                       test_acc_at_best_val=test - 1 + seed, best_val_acc=val + seed, val_acc=val)  # fmt: skip
            _write_run(tmp_path / "old" / f"{t0}_{seed}", t0=t0, seed=seed, test_acc=test + seed)
    from tdgs.report.tables import temperature_init_table

    numbers, text = temperature_init_table(collect([tmp_path]))  # two tables: with a validation split, without
    rows = numbers.set_index(["validation", "t0"])
    assert rows.loc[("val 100 of 1000", 2.0), "best"] and not rows.loc[("val 100 of 1000", 0.5), "best"]
    assert rows.loc[("no validation", 0.5), "best"] and rows.loc[("no validation", 0.5), "selected_by"] == "test"
    assert rows.loc[("val 100 of 1000", 0.5), "mean"] == 94.5 and rows.loc[("no validation", 0.5), "mean"] == 95.5
    validated, without = text.split("\n\n*")
    assert validated.startswith("*Test accuracy at each run's best validation epoch, mean ± std over seeds (n); best "
                                "marks chosen by validation accuracy.*")  # fmt: skip
    assert "89.50 ± 0.71 (2) **best** |" in validated  # by validation: the plain mark
    assert without.startswith("Final-epoch test accuracy (no validation split), mean ± std over seeds (n); best marks "
                              "chosen by test accuracy.*")  # fmt: skip
    assert "95.50 ± 0.71 (2) **best** (by test accuracy, no validation split)" in without
    numbers, text = temperature_init_table(collect([tmp_path / "val"]))
    assert text.startswith("*Test accuracy at each run's best validation epoch") and "\n\n*" not in text
    assert numbers.best.tolist() == [False, True] and numbers["mean"].tolist() == [94.5, 89.5]  # the selected epochs
    numbers, text = temperature_init_table(collect([tmp_path / "val"]), "final")
    assert text.startswith("*Final-epoch test accuracy,") and numbers["mean"].tolist() == [95.5, 90.5]
    assert numbers.best.tolist() == [False, True]  # still chosen on validation (the final epoch's)


def test_recipes_and_validation_splits_are_never_pooled(tmp_path):
    modern = {"optimizer": "adamw", "weight_decay": 0.05, "schedule": "cosine", "warmup_epochs": 1,
              "label_smoothing": 0.1, "augment": "crop"}  # fmt: skip
    halfway = {"optimizer": "adamw", "weight_decay": 0.05, "schedule": "cosine"}  # as far from both: the deck's
    kinds = {"deck": {}, "modern": modern, "modern_lr": modern | {"lr": 0.01}, "normalized": {"normalize_inputs": True}}
    kinds |= {"halfway": halfway, "patient": {"early_stopping_patience": 5}}  # a value where the recipes have none
    for name, recipe in kinds.items():
        for seed in range(2):
            _write_run(tmp_path / name / str(seed), pooler="max", seed=seed, test_acc=90.0 + seed, **recipe)
    runs = collect([tmp_path])
    assert sorted(set(runs.summaries.recipe)) == [
        "default", "default + early_stopping_patience=5", "default + normalized inputs",
        "default + optimizer=adamw, weight_decay=0.05, schedule=cosine", "modern", "modern + lr=0.01"
    ]  # fmt: skip
    from tdgs.report.tables import all_poolers_table

    numbers, _ = all_poolers_table(runs)
    assert len(numbers) == 6 and (numbers.n == 2).all()


def test_a_settings_label_names_what_sets_it_apart(tmp_path):
    """The deck's CNN goes unnamed, another network is named; one epoch is singular."""
    _write_run(tmp_path / "deck", pooler="max", test_acc=90.0, val_size=100, train_size=900, split_seed=3)
    _write_run(tmp_path / "resnet", pooler="max", model="resnet18", dataset="cifar10", epochs=1, test_acc=80.0)
    labels = default_runs(collect([tmp_path])).set_index("model").setting
    assert labels["deck_cnn"] == "mnist, 10 epochs, default, val 100 of 1000 (split seed 3)"
    assert labels["resnet18"] == "cifar10, resnet18, 1 epoch, default, no validation"
    assert validation_label(pd.Series({"val_size": 1, "train_size": 9, "split_seed": 0})) == "val 1 of 10"


def test_a_summary_from_before_an_option_and_a_pooler_of_ones_own_count_as_defaults(tmp_path):
    """An option a summary.csv lacks (NaN beside newer runs, which makes padding 0.0 there) is its
    default; a pooler the schema does not know has no options to differ in."""
    _write_run(tmp_path / "new", padding=0, eval_mode="expectation", test_acc=90.0)
    _write_run(tmp_path / "old", seed=1, test_acc=91.0)  # from before padding and eval_mode
    _write_run(tmp_path / "mine", pooler="mine", test_acc=80.0)
    _write_run(tmp_path / "other", padding=1, seed=2, test_acc=92.0)
    from tdgs.report.tables import configurations_table

    runs = collect([tmp_path])
    assert sorted(Path(f).name for f in default_runs(runs).folder) == ["mine", "new", "old"]
    numbers, _ = configurations_table(runs)  # no run has a validation column
    assert sorted(numbers.pooler) == ["mine", "tdgs", "tdgs", "tdgs"] and numbers.val_mean.isna().all()


def test_each_summary_that_cannot_count_is_a_problem_saying_why(tmp_path):
    _write_run(tmp_path / "metrics", test_acc=90.0)
    (tmp_path / "metrics" / "metrics.csv").write_text("epoch,test_acc\n")
    _write_run(tmp_path / "summary", test_acc=90.0)
    (tmp_path / "summary" / "summary.csv").write_text("dataset,pooler,seed,test_acc,status\n")
    _write_run(tmp_path / "columns", test_acc=90.0)
    pd.DataFrame([{"dataset": "mnist", "pooler": "max", "status": "completed"}]).to_csv(
        tmp_path / "columns" / "summary.csv", index=False
    )
    _write_run(tmp_path / "temperatures", test_acc=90.0)  # counted, with a problem beside it
    (tmp_path / "temperatures" / "temperatures.csv").write_text("layer,channel,row,col,temperature\n")
    _write_run(tmp_path / "failed", test_acc=90.0, status="failed")  # no error written
    _write_run(tmp_path / "failed_blank", test_acc=90.0, status="failed", error=math.nan)  # an empty one
    runs = collect([tmp_path])
    problems = runs.problems.set_index("folder").problem
    assert problems[str(tmp_path / "temperatures")] == "temperatures.csv unreadable (ValueError: no rows)"
    assert list(runs.summaries.folder) == [str(tmp_path / "temperatures")]
    assert problems[str(tmp_path / "metrics")] == "completed, but metrics.csv unreadable (ValueError: no rows)"
    assert problems[str(tmp_path / "summary")] == "unreadable summary.csv (ValueError: no rows)"
    assert problems[str(tmp_path / "columns")] == "unreadable summary.csv (ValueError: missing columns seed, test_acc)"
    assert problems[str(tmp_path / "failed")] == problems[str(tmp_path / "failed_blank")] == "status failed"


def test_the_reports_schema_is_the_configurations():
    """schema.json (what tdgs-report knows of the configuration without torch) is what the
    configuration defines: `python -m tdgs.report.schema` rewrites it after a change."""
    import json

    from tdgs.report.schema import SCHEMA_FILE, from_config

    assert json.loads(SCHEMA_FILE.read_text()) == json.loads(json.dumps(from_config()))


def test_tdgs_report_starts_without_torch():
    code = "import sys, tdgs.report.main; print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr
