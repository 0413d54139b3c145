"""The Hydra configuration composes for every group option, matches the pooler registry and the
deck's protocol, and refuses values of the wrong type."""

import inspect
from pathlib import Path

import pytest
import yaml
from conftest import compose_config
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ValidationError

from tdgs.cli import CONF_DIR
from tdgs.data import DATASETS, load_dataset
from tdgs.pooling import POOLERS, pooler_options


def test_defaults_follow_the_deck():
    cfg = compose_config()
    assert (cfg.dataset.name, cfg.pooler.name, cfg.seed, cfg.device) == ("digits", "tdgs", 0, "auto")
    assert (cfg.trainer.epochs, cfg.trainer.batch_size, cfg.trainer.lr) == (10, 64, 1e-3)
    assert cfg.pooler.t0 == 1.0


@pytest.mark.parametrize("name", DATASETS)
def test_every_dataset_composes_with_its_own_fields_only(name):
    cfg = compose_config(f"dataset={name}")
    fields = set(cfg.dataset) - {"name", "normalize"}  # normalize: the inputs' (every dataset's), not the loader's
    assert cfg.dataset.name == name and fields <= set(inspect.signature(load_dataset).parameters)
    used = {
        "mnist": {"root", "download", "source"},
        "fashion_mnist": {"root", "download", "source"},
        "cifar10": {"root", "download"},
        "digits": {"seed"},
        "synthetic": {"geometry", "train_size", "test_size", "seed"},
    }
    assert fields == used[name] | {"val_size", "split_seed"}  # the validation split: every dataset's
    for other in set().union(*used.values()) - used[name]:  # another dataset's field is refused
        with pytest.raises(ConfigCompositionException):
            compose_config(f"dataset={name}", f"dataset.{other}=1")


@pytest.mark.parametrize("name", list(POOLERS))
def test_every_pooler_config_has_its_module_options_and_defaults(name):
    cfg = compose_config(f"pooler={name}")
    options = {k: v for k, v in cfg.pooler.items() if k != "name"}
    assert cfg.pooler.name == name
    # dilation and ceil_mode are accepted only at nn.MaxPool2d's defaults: nothing to configure
    assert set(options) == set(pooler_options(name)) - {"input_size", "dilation", "ceil_mode"}
    defaults = {}
    for cls in reversed(POOLERS[name].__mro__):
        if "__init__" in vars(cls):
            parameters = inspect.signature(cls.__init__).parameters.values()
            defaults |= {p.name: p.default for p in parameters if p.kind is p.KEYWORD_ONLY}
    assert options == {k: defaults[k] for k in options}


def test_pooler_options_override_with_types_checked():
    cfg = compose_config("pooler=tdgs", "pooler.t0=0.5", "pooler.hard=false", "pooler.normalize=none")
    assert (cfg.pooler.t0, cfg.pooler.hard, cfg.pooler.normalize) == (0.5, False, "none")


@pytest.mark.parametrize(
    "override",
    ["trainer.epochs=abc", "pooler.t0=hot", "trainer.lr=fast", "seed=x", "pooler=max pooler.t0=1"],
)
def test_wrong_types_and_unknown_keys_are_refused(override):
    with pytest.raises((ConfigCompositionException, ValidationError)):
        compose_config(*override.split())


def test_unknown_group_option_is_refused():
    with pytest.raises(ConfigCompositionException):
        compose_config("pooler=maxx")


def test_demo_experiment():
    cfg = compose_config("experiment=demo")
    assert cfg.dataset.name == "digits" and cfg.trainer.epochs == 5


def test_paths_and_trainer_groups():
    cfg = compose_config("dataset=mnist", "paths.data_dir=/d", "paths.output_dir=/o", "trainer.threads=1")
    assert cfg.dataset.root == "/d" and cfg.paths.output_dir == "/o" and cfg.trainer.threads == 1


@pytest.mark.parametrize("group", ["dataset", "pooler", "model", "trainer", "paths"])
def test_group_files_hold_only_what_differs_from_their_schema(group):
    """Defaults are written once (the modules' signatures, load_dataset's, the schemas in
    tdgs/config.py): a group's file names its schema and, at most, the option's name; a recipe
    (trainer=modern) only the values it changes."""
    for path in (Path(CONF_DIR) / group).glob("*.yaml"):
        values = {k: v for k, v in yaml.safe_load(path.read_text()).items() if k not in ("defaults", "name")}
        if (group, path.stem) == ("trainer", "modern"):
            defaults = compose_config().trainer
            assert values and all(defaults[k] != v for k, v in values.items()), path
        else:
            assert not values, path
