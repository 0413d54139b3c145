"""What tdgs-report knows of tdgs-train's configuration without importing torch (so that it starts
in about a second): the poolers in their registry's order with every option's default, each
dataset's options' defaults, the trainer's defaults and its summary.csv columns. Read from
schema.json, which ``python -m tdgs.report.schema`` writes from the configuration's own schemas
(:mod:`tdgs.config`), and which tests/test_report.py checks against them."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

SCHEMA_FILE = Path(__file__).with_name("schema.json")


def from_config() -> dict:
    """The schema as tdgs-train's configuration defines it (imports torch)."""
    from ..config import DATASET_SCHEMAS, POOLER_SCHEMAS, TrainerConfig
    from ..pooling import POOLERS
    from ..train import TRAINER_COLUMNS

    defaults = lambda schema: {f.name: f.default for f in fields(schema) if f.name != "name"}  # noqa: E731
    return {
        "poolers": list(POOLERS),
        "pooler_defaults": {name: defaults(schema) for name, schema in POOLER_SCHEMAS.items()},
        "dataset_defaults": {name: defaults(schema) for name, schema in DATASET_SCHEMAS.items()},
        "trainer_defaults": defaults(TrainerConfig),
        "trainer_columns": list(TRAINER_COLUMNS),
    }


_SCHEMA = json.loads(SCHEMA_FILE.read_text())
POOLERS: tuple[str, ...] = tuple(_SCHEMA["poolers"])
POOLER_DEFAULTS: dict[str, dict] = _SCHEMA["pooler_defaults"]
DATASET_DEFAULTS: dict[str, dict] = _SCHEMA["dataset_defaults"]
TRAINER_DEFAULTS: dict = _SCHEMA["trainer_defaults"]
TRAINER_COLUMNS: tuple[str, ...] = tuple(_SCHEMA["trainer_columns"])

if __name__ == "__main__":  # python -m tdgs.report.schema: rewrite schema.json from the configuration
    SCHEMA_FILE.write_text(json.dumps(from_config(), indent=1) + "\n")
