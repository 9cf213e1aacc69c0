"""Every config in conf/ composes and validates; bad values fail early with one clear line."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from ppo_exp.config import ConfigError, PPOConfig, mlflow_params, to_config

CONF = Path(__file__).parents[1] / "conf"
# preferences/ belongs to `python -m ppo_exp.reward_model` (tested in test_reward_model.py)
GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir() and p.name != "preferences")
# Presets whose mandatory keys (???) must come from the command line.
REQUIRED = {
    "reward/function": ["reward.function=mod:fn"],
    "reward/classifier": ["reward.path=/some/classifier"],
    "reward/learned": ["reward.path=/some/reward_model"],
    "data/hf": ["data.path=prompts.jsonl"],
}


def compose_config(overrides: list[str]) -> PPOConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        return to_config(compose(config_name="config", overrides=overrides))


def test_default_config_equals_the_documented_defaults():
    # conf/*/default presets and the dataclass defaults must not drift apart.
    assert compose_config([]) == PPOConfig()


@pytest.mark.parametrize(
    "group,option",
    [(g, p.stem) for g in GROUPS for p in sorted((CONF / g).glob("*.yaml"))],
)
def test_every_preset_composes_and_validates(group, option):
    cfg = compose_config([f"{group}={option}", *REQUIRED.get(f"{group}/{option}", [])])
    assert isinstance(cfg, PPOConfig)


def test_presets_set_the_flat_hyperparameters():
    assert compose_config(["gae=mc"]).lam == 1.0
    assert compose_config(["gae=td"]).lam == 0.0
    assert compose_config(["clip=tight"]).clip_eps == 0.1
    # A command-line value wins over the preset.
    assert compose_config(["clip=tight", "clip_eps=0.3"]).clip_eps == 0.3


def test_smoke_preset_is_small():
    cfg = compose_config(["train=smoke"])
    assert cfg.iterations <= 3 and cfg.batch_size <= 16


@pytest.mark.parametrize(
    "override,key,accepted",
    [
        ("gamma=1.5", "gamma", "[0, 1]"),
        ("lam=-0.1", "lam", "[0, 1]"),
        ("clip_eps=0", "clip_eps", "> 0"),
        ("ppo_epochs=0", "ppo_epochs", ">= 1"),
        ("lr=0", "lr", "> 0"),
        ("lr=-0.5", "lr", "> 0"),
        ("num_minibatches=5", "num_minibatches", "divisor of batch_size=64"),
        ("kl_estimator=k2", "kl_estimator", "'k1' or 'k3'"),
        ("value_clip_eps=-1", "value_clip_eps", "or null"),
        ("model.dtype=half", "model.dtype", "float32 | bfloat16"),
        ("micro_batch_size=0", "micro_batch_size", ">= 1, or null"),
        ("data.max_prompt_tokens=0", "data.max_prompt_tokens", ">= 1, or null"),
        ("kl_coef=-0.1", "kl_coef", ">= 0"),
        ("objective=reward", "objective", "a metric the trainer logs"),
    ],
)
def test_bad_values_name_key_value_and_accepted(override, key, accepted):
    with pytest.raises(ConfigError) as info:
        compose_config([override])
    message = str(info.value)
    assert info.value.key == key
    assert f"{key}=" in message and accepted in message
    assert override.split("=", 1)[1] in message


@pytest.mark.parametrize(
    "preset,key", [("reward=function", "reward.function"), ("reward=classifier", "reward.path")]
)
def test_preset_without_its_required_value_is_a_config_error(preset, key):
    with pytest.raises(ConfigError, match=key):
        compose_config([preset])


def test_hyperparameters_are_flat_and_named_like_the_config_keys():
    params = mlflow_params(PPOConfig())
    for key in ("gamma", "lam", "clip_eps", "ppo_epochs", "lr", "vf_coef", "ent_coef", "kl_coef"):
        assert key in params
    assert params["model"] == "tiny-reviews" and params["reward"] == "vader"
    assert not any(isinstance(v, dict) for v in params.values())


def test_config_is_a_plain_dataclass_round_trip():
    cfg = PPOConfig(clip_eps=0.3)
    assert OmegaConf.to_object(OmegaConf.structured(cfg)) == cfg
    assert dataclasses.replace(cfg, lam=0.5).lam == 0.5
