"""Typed schemas of the Hydra configuration (``conf/``), registered in Hydra's ConfigStore under
``schema/<group>``; every YAML file of a group extends its schema, so a value of the wrong type is
refused when the config is composed. Only the command-line layer reads these; layers, models and
data loaders take plain arguments."""

from __future__ import annotations

import inspect
import typing
from dataclasses import dataclass, field, make_dataclass

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from .conf_dir import CONF_DIR  # noqa: F401  (tdgs.config.CONF_DIR: the configuration's folder)
from .data import DATASET_OPTIONS, DATASETS, load_dataset
from .pooling import POOLERS, pooler_signature


@dataclass
class DatasetConfig:
    name: str = MISSING  # mnist | fashion_mnist | cifar10 | digits | synthetic
    normalize: bool = False  # inputs normalised per channel by the training split's mean and std (else in [0, 1])


def dataset_schema(name: str) -> type:
    """The schema of ``dataset=name``: the options of :func:`tdgs.data.load_dataset` it takes,
    with their types and defaults (documented there; ``val_size`` and ``split_seed``, the
    validation split, are every dataset's), but ``root``: the paths group's data folder."""
    hints, parameters = typing.get_type_hints(load_dataset), inspect.signature(load_dataset).parameters
    defaults = {option: parameters[option].default for option in DATASET_OPTIONS[name]} | {"root": "${paths.data_dir}"}
    fields = [(option, hints[option], field(default=defaults[option])) for option in DATASET_OPTIONS[name]]
    return make_dataclass(f"{name.title().replace('_', '')}Config", fields, bases=(DatasetConfig,))


@dataclass
class ModelConfig:
    name: str = MISSING  # deck_cnn | resnet18 | vgg11_bn (tdgs.networks)


@dataclass
class PoolerConfig:
    name: str = MISSING  # a key of tdgs.pooling.POOLERS


# accepted by the poolers, not set from the command line: input_size (the first input sizes the
# temperatures), dilation and ceil_mode (only nn.MaxPool2d's defaults are taken)
NOT_CONFIGURED = ("input_size", "dilation", "ceil_mode")


def pooler_schema(name: str) -> type:
    """The schema of ``pooler=name``: every option of its module with the module's type and
    default (:func:`tdgs.pooling.pooler_signature`; the options are documented there), so that
    the defaults are written once, in the module."""
    options = pooler_signature(name).items()
    fields = [
        (option, kind, field(default=default)) for option, (kind, default) in options if option not in NOT_CONFIGURED
    ]
    return make_dataclass(f"{POOLERS[name].__name__}Config", fields, bases=(PoolerConfig,))


@dataclass
class TrainerConfig:
    """The defaults are the deck's recipe (``trainer=default``); ``trainer=modern`` is another."""

    epochs: int = 10  # passes over the training set
    batch_size: int = 64  # training batch size
    optimizer: str = "adam"  # adam | adamw (decoupled weight decay) | sgd (momentum 0.9, Nesterov)
    lr: float = 1e-3  # learning rate (the peak, after any warm-up)
    weight_decay: float = 0.0  # on conv and linear weights only (not biases, norms or pooler parameters)
    schedule: str = "constant"  # constant | cosine (to 0 at the last step), per step
    warmup_epochs: int = 0  # linear warm-up of the learning rate over these first epochs (per step)
    label_smoothing: float = 0.0  # of the training loss (evaluation losses are plain cross-entropy)
    augment: str = "none"  # none | crop (random crop, zero padding 4 px at 32 px, 2 px below) | flip_crop (+ h-flip)
    early_stopping_patience: int | None = None  # stop after this many epochs without a better val_acc; None: off
    theta_lr_scale: float = 1.0  # TDGS temperatures' (theta's) learning rate, as a multiple of lr
    eval_batch_size: int = 1000  # batch size for evaluation (no effect on results)
    progress: bool | None = None  # tqdm bars: None = only on a terminal
    threads: int | None = None  # torch CPU threads; None = torch's default
    deterministic: bool = False  # torch.use_deterministic_algorithms (slower on CUDA)
    probe_size: int = 500  # test images used to summarise input-dependent pooler state (gated)
    precision: str = "32"  # 32 | bf16-mixed | 16-mixed (autocast; 16-mixed adds a gradient scaler)
    compile: str = "auto"  # auto | none | inductor | graph (CUDA graphs); auto = graph on CUDA, none on the CPU


@dataclass
class TensorBoardConfig:
    pass  # event files in each run folder's tensorboard/ (tdgs.loggers.TensorBoard)


@dataclass
class MLflowConfig:
    tracking_uri: str | None = None  # None: a SQLite store at ${paths.output_dir}/mlflow.db (artifacts beside it)
    experiment_name: str | None = None  # None: the name of the folder the run lies in (a sweep's)


@dataclass
class PathsConfig:
    data_dir: str = "${oc.env:TDGS_DATA_DIR,data}"  # datasets (relative to the working directory)
    output_dir: str = "${oc.env:TDGS_OUTPUT_DIR,outputs}"  # where run folders land


@dataclass
class Config:
    dataset: DatasetConfig = MISSING
    model: ModelConfig = MISSING
    pooler: PoolerConfig = MISSING
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    seed: int = 0  # seeds torch, numpy and random
    resume: bool = False  # continue this run folder from its last complete epoch (hydra.run.dir=...)
    reuse: str | None = None  # a folder: a completed run of this configuration and seed below it is copied, not rerun
    logger: dict = field(default_factory=dict)  # the loggers chosen (logger=[csv,tensorboard,mlflow]): their options
    comparison: str | None = None  # a name: tdgs-report compares its runs pooler against pooler, whatever their options
    device: str = "auto"  # auto (CUDA when available) | cpu | cuda | cuda:N


DATASET_SCHEMAS = {name: dataset_schema(name) for name in DATASETS}
POOLER_SCHEMAS = {name: pooler_schema(name) for name in POOLERS}


def register_configs() -> None:
    """Store the schemas: ``base_config``, ``schema/dataset/<name>``, ``schema/pooler/<name>``, ..."""
    store = ConfigStore.instance()
    store.store(name="base_config", node=Config)
    store.store(group="schema/model", name="base", node=ModelConfig)
    store.store(group="schema/trainer", name="base", node=TrainerConfig)
    store.store(group="schema/paths", name="base", node=PathsConfig)
    store.store(group="schema/logger", name="tensorboard", node=TensorBoardConfig)
    store.store(group="schema/logger", name="mlflow", node=MLflowConfig)
    for name, schema in DATASET_SCHEMAS.items():
        store.store(group="schema/dataset", name=name, node=schema)
    for name, schema in POOLER_SCHEMAS.items():
        store.store(group="schema/pooler", name=name, node=schema)
