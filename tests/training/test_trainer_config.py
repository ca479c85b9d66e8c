"""Config validation and the shipped configs/trainer/*.yaml."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from flowctl.training import DEFAULTS, TrainingError, validate_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "trainer"


def test_default_yaml_matches_code_defaults():
    yaml_cfg = OmegaConf.to_container(OmegaConf.load(CONFIGS / "default.yaml"))
    assert yaml_cfg == DEFAULTS
    assert validate_config(yaml_cfg) == validate_config({})


def test_tiny_yaml_is_valid():
    tiny = OmegaConf.to_container(OmegaConf.load(CONFIGS / "tiny.yaml"))
    assert tiny.pop("defaults") == ["default", "_self_"]
    merged = validate_config({**DEFAULTS, **tiny})
    assert merged["device"] == "cpu" and merged["epochs"] == 2


def test_omegaconf_dictconfig_is_accepted():
    c = validate_config(OmegaConf.create({"lr": 3e-4, "betas": [0.8, 0.9],
                                          "nonfinite": {"max_restores": 1}}))
    assert c["lr"] == 3e-4 and c["betas"] == [0.8, 0.9]
    assert c["nonfinite"] == {"max_consecutive": 5, "max_restores": 1}


@pytest.mark.parametrize(
    ("cfg", "words"),
    [
        ({"learning_rate": 1e-3}, ["learning_rate", "unknown"]),
        ({"lr": "fast"}, ["lr", "'fast'", "str", "float > 0"]),
        ({"batch_size": 0}, ["batch_size", "0", "int >= 1"]),
        ({"batch_size": True}, ["batch_size", "True", "bool"]),
        ({"epochs": 2.5}, ["epochs", "2.5", "int >= 1 or null"]),
        ({"schedule": "linear"}, ["schedule", "'linear'", "cosine"]),
        ({"device": "gpu"}, ["device", "'gpu'", "cuda:N"]),
        ({"betas": [0.9]}, ["betas", "list of 2 floats"]),
        ({"milestones": [20, 10]}, ["milestones", "ascending"]),
        ({"grad_clip": -1.0}, ["grad_clip", "-1.0", "float > 0 or null"]),
        ({"nonfinite": {"max_consecutive": 0}}, ["nonfinite.max_consecutive", "0"]),
        ({"nonfinite": {"max_nan": 1}}, ["nonfinite.max_nan", "unknown"]),
        ({"nonfinite": 3}, ["nonfinite", "mapping"]),
        ({"epochs": None, "max_steps": None}, ["epochs", "max_steps", "null"]),
        ({"lr": 1e-3, "min_lr": 1e-2}, ["min_lr", "<= lr"]),
    ],
)
def test_bad_values_name_key_value_and_expectation(cfg, words):
    with pytest.raises(TrainingError) as info:
        validate_config(cfg)
    msg = str(info.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg, (w, msg)


def test_ints_are_accepted_for_floats():
    c = validate_config({"lr": 1, "grad_clip": 5, "max_steps": 10, "epochs": None})
    assert c["lr"] == 1.0 and isinstance(c["lr"], float) and c["grad_clip"] == 5.0
