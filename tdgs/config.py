"""Typed schemas of the Hydra configuration (``conf/``), registered in Hydra's ConfigStore under
``schema/<group>``; every YAML file of a group extends its schema, so a value of the wrong type is
refused when the config is composed. Only the command-line layer reads these; layers, models and
data loaders take plain arguments."""

from __future__ import annotations

from dataclasses import dataclass, field

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class DatasetConfig:
    name: str = MISSING  # mnist | fashion_mnist | cifar10 | digits | synthetic


@dataclass
class Cifar10Config(DatasetConfig):
    root: str = "${paths.data_dir}"  # where downloaded / extracted files live
    download: bool = True  # try to download missing files


@dataclass
class IdxConfig(Cifar10Config):  # mnist, fashion_mnist
    source: str | None = None  # a folder holding the four IDX(.gz) files, read instead of root's


@dataclass
class DigitsConfig(DatasetConfig):
    seed: int = 0  # the 80/20 split; fixed, independent of the run's seed


@dataclass
class SyntheticConfig(DatasetConfig):
    geometry: str = "mnist"  # mnist (1x28x28) or cifar (3x32x32)
    train_size: int = 2000  # training images
    test_size: int = 500  # test images
    seed: int = 0  # generation; fixed, independent of the run's seed


@dataclass
class ModelConfig:
    name: str = MISSING  # deck_cnn | resnet18 | vgg11_bn (tdgs.networks)


@dataclass
class PoolerConfig:
    name: str = MISSING  # a key of tdgs.pooling.POOLERS
    kernel_size: int = 2  # pooling window side k
    stride: int = 2  # window step s
    padding: int = 0  # positions added on each side, never picked (<= kernel_size // 2)


@dataclass
class MixedConfig(PoolerConfig):
    granularity: str = "channel"  # channel (one logit per channel) | layer (one scalar)


@dataclass
class GatedConfig(PoolerConfig):
    granularity: str = "channel"  # channel (mask and bias per channel) | layer (one shared mask)


@dataclass
class S3Config(PoolerConfig):
    grid_size: int = 4  # block side g; a multiple of stride


@dataclass
class TDGSConfig(PoolerConfig):
    t0: float = 1.0  # initial temperature scale: theta = t0 * U(0.5, 1.5)
    granularity: str = "position"  # position (C, Ho, Wo) | channel (C,) | layer (1,)
    eps: float = 0.1  # T = rectifier(theta) + eps
    rectifier: str = "relu"  # relu | softplus
    normalize: str = "l2"  # window normalisation before dividing by T: l2 | none | l1 | max
    hard: bool = True  # training outputs the sampled value (straight-through gradient)
    eval_mode: str = "expectation"  # expectation | sample | argmax


@dataclass
class TrainerConfig:
    epochs: int = 10  # passes over the training set
    batch_size: int = 64  # training batch size
    lr: float = 1e-3  # Adam learning rate
    eval_batch_size: int = 1000  # batch size for evaluation (no effect on results)
    progress: bool | None = None  # tqdm bars: None = only on a terminal
    threads: int | None = None  # torch CPU threads; None = torch's default
    deterministic: bool = False  # torch.use_deterministic_algorithms (slower on CUDA)
    probe_size: int = 500  # test images used to summarise input-dependent pooler state (gated)
    precision: str = "32"  # 32 | bf16-mixed | 16-mixed (autocast; 16-mixed adds a gradient scaler)
    compile: str = "auto"  # auto | none | inductor | graph (CUDA graphs); auto = graph on CUDA, none on the CPU


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
    device: str = "auto"  # auto (CUDA when available) | cpu | cuda | cuda:N


DATASET_SCHEMAS = {
    "mnist": IdxConfig,
    "fashion_mnist": IdxConfig,
    "cifar10": Cifar10Config,
    "digits": DigitsConfig,
    "synthetic": SyntheticConfig,
}
POOLER_SCHEMAS = {
    "max": PoolerConfig,
    "avg": PoolerConfig,
    "mixed": MixedConfig,
    "gated": GatedConfig,
    "stochastic": PoolerConfig,
    "s3": S3Config,
    "tdgs": TDGSConfig,
}


def register_configs() -> None:
    """Store the schemas: ``base_config``, ``schema/dataset/<name>``, ``schema/pooler/<name>``, ..."""
    store = ConfigStore.instance()
    store.store(name="base_config", node=Config)
    store.store(group="schema/model", name="base", node=ModelConfig)
    store.store(group="schema/trainer", name="base", node=TrainerConfig)
    store.store(group="schema/paths", name="base", node=PathsConfig)
    for name, schema in DATASET_SCHEMAS.items():
        store.store(group="schema/dataset", name=name, node=schema)
    for name, schema in POOLER_SCHEMAS.items():
        store.store(group="schema/pooler", name=name, node=schema)
