"""The package as a user installs it: a wheel built from the source tree carries the configuration
and the C++ sources, and, installed (not editable) into a folder of its own, runs tdgs-train and
tdgs-report from another folder without the source tree."""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent


def _not_sources(folder, names):
    """What a clean checkout lacks: the environment, runs, data, build outputs, caches."""
    skipped = {".git", ".venv", "outputs", "data", "build"} if Path(folder) == ROOT else set()
    return [n for n in names if n in skipped or n == "__pycache__" or n.endswith((".egg-info", "_cache"))]


def _run(command, **kwargs):
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, **kwargs)
    assert result.returncode == 0, f"{' '.join(map(str, command))}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return result


def test_a_built_wheel_runs_tdgs_train_and_tdgs_report_without_the_source_tree(tmp_path):
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=_not_sources)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
    _run([*pip, "wheel", "--no-deps", "--no-build-isolation", str(source), "-w", str(tmp_path / "dist")])
    (wheel,) = (tmp_path / "dist").glob("tdgs-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    shipped = {
        Path(n).relative_to("tdgs/conf").as_posix() for n in names if n.startswith("tdgs/conf/") and n.endswith(".yaml")
    }
    assert shipped == {p.relative_to(ROOT / "conf").as_posix() for p in (ROOT / "conf").rglob("*.yaml")}
    assert {p.name for p in (ROOT / "tdgs/pooling/csrc").iterdir()} <= {Path(n).name for n in names if "/csrc/" in n}

    site = tmp_path / "site"
    _run([*pip, "install", "--no-deps", "--no-index", "--target", str(site), str(wheel)])
    shutil.rmtree(source)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "TDGS_OUTPUT_DIR": str(elsewhere / "outputs")}
    where = _run(
        [sys.executable, "-c", "import tdgs.conf; print(tdgs.__file__); print(tdgs.conf.__file__)"],  # no torch: 0.1 s
        cwd=elsewhere,
        env=env,
    )
    assert all(line.startswith(str(site)) for line in where.stdout.split()), where.stdout  # not this checkout

    train = [
        str(site / "bin" / "tdgs-train"),
        "-m",
        "dataset=synthetic",
        "dataset.train_size=128",
        "dataset.test_size=64",
        "trainer.epochs=1",
        "pooler=max,tdgs",
        "hydra.sweep.dir=sweep",
    ]
    _run(train, cwd=elsewhere, env=env)
    for job in ("0_synthetic_max_seed0", "1_synthetic_tdgs_seed0"):
        assert pd.read_csv(elsewhere / "sweep" / job / "summary.csv").status.tolist() == ["completed"]
    _run([str(site / "bin" / "tdgs-report"), "sweep", "--out", "report"], cwd=elsewhere, env=env)
    assert pd.read_csv(elsewhere / "report" / "all_poolers.csv").pooler.tolist() == ["max", "tdgs"]


def test_a_source_tree_that_was_never_installed_finds_its_conf(tmp_path):
    """As on a GPU machine that gets the source tree on PYTHONPATH and no install: conf/ beside tdgs/."""
    code = (
        # without the editable install's finder
        "import sys; sys.meta_path[:] = [f for f in sys.meta_path if 'Editable' not in repr(f)]; "
        "import tdgs.cli; print(tdgs.cli.__file__); print(tdgs.cli.CONF_DIR)"
    )
    shown = _run([sys.executable, "-c", code], cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert shown.stdout.split() == [str(ROOT / "tdgs" / "cli.py"), str(ROOT / "conf")]
