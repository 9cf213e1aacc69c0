"""Checks of the model and data settings that need torch or transformers but no weights.

They run after `config.preflight` (paths exist, cheap checks without torch) and before any
model loads (from `python -m ppo_exp.run` before its MLflow run starts, and again when a
trainer is built), so a prompt budget larger than the model's positions, a dtype the device
cannot run, a LoRA target the model lacks or a critic with other tokens fails in one line
naming the key, the value and what is accepted, not minutes into loading weights.
"""

from __future__ import annotations

import glob
from pathlib import Path

from ppo_exp import locations
from ppo_exp.config import ConfigError, PPOConfig

POSITION_ATTRIBUTES = ("max_position_embeddings", "n_positions", "max_sequence_length")


def check(cfg: PPOConfig) -> None:
    """Raise `ConfigError` for the first model or data setting that cannot work.

    Checks: `model.device` and `model.dtype` on this machine; `model.path` and a
    `model.value_model` path exist and have a config.json; the critic checkpoint reads
    the policy's tokens; `data.max_prompt_tokens + max_new_tokens` fits the model's
    positions; every LoRA target module exists in the model; a local `data.path` exists.
    """
    from ppo_exp.ppo.hardware import resolve_device, resolve_dtype

    resolve_dtype(cfg.model.dtype, resolve_device(cfg.model.device))
    mc = cfg.model
    policy = checkpoint_config("model.path", mc.path) if mc.path else None
    if mc.value_model not in ("separate", "shared"):
        checkpoint_config("model.value_model", mc.value_model)
        if mc.path:
            _check_same_tokens(mc.path, mc.value_model)
    for key, reward in (("reward", cfg.reward), ("reward.gold", cfg.reward.gold)):
        if reward is not None and reward.input == "tokens":
            from ppo_exp.ppo.loading import policy_path

            _check_reward_reads_tokens(key, reward.path, policy_path(cfg))
    if policy is not None and cfg.data.max_prompt_tokens is not None:
        _check_positions(cfg, policy, cfg.data.max_prompt_tokens, "data.max_prompt_tokens")
    if mc.lora is not None and mc.lora.target_modules != ["all-linear"]:
        from ppo_exp.ppo.loading import policy_path

        config = policy or checkpoint_config("model.path", policy_path(cfg))
        _check_lora_targets(config, list(mc.lora.target_modules))
    if cfg.data.kind == "hf" and _looks_local(cfg.data.path) and not glob.glob(
        str(Path(cfg.data.path).expanduser())
    ):
        raise ConfigError(
            "data.path", cfg.data.path, "existing data files or a directory, or a hub dataset"
        )


def check_fits(cfg: PPOConfig, longest_prompt: int) -> None:
    """The longest prompt kept + `max_new_tokens` must fit the policy's positions."""
    from ppo_exp.ppo.loading import policy_path

    config = checkpoint_config("model.path", policy_path(cfg))
    _check_positions(cfg, config, longest_prompt, "the longest prompt")


def checkpoint_config(key: str, path: str):
    """The transformers config of the checkpoint at `path` (config.json only: cheap)."""
    from transformers import AutoConfig

    locations.checkpoint_config(key, path)  # a local path exists and holds a config.json
    try:
        return AutoConfig.from_pretrained(str(Path(path).expanduser()))
    except (OSError, ValueError) as error:
        reason = str(error).splitlines()[0][:200]
        raise ConfigError(key, path, f"a checkpoint with a config.json ({reason})") from None


def model_positions(config) -> int | None:
    """How many token positions the model has (its config's position limit), if it says."""
    for name in POSITION_ATTRIBUTES:
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _check_positions(cfg: PPOConfig, config, prompt_tokens: int, what: str) -> None:
    positions = model_positions(config)
    if positions is not None and prompt_tokens + cfg.max_new_tokens > positions:
        raise ConfigError(
            "max_new_tokens", cfg.max_new_tokens,
            f"at most {positions - prompt_tokens}: {what} ({prompt_tokens} tokens) + "
            f"max_new_tokens must fit the model's {positions} positions",
        )


def _check_same_tokens(policy_path: str, critic_path: str) -> None:
    """The critic reads the policy's token ids, so both must share one vocabulary."""
    if _same_vocabulary(policy_path, critic_path) is False:  # None: no tokenizer saved
        raise ConfigError(
            "model.value_model", critic_path,
            "a checkpoint with the policy's tokenizer (the critic reads the policy's tokens)",
        )


def _check_reward_reads_tokens(key: str, reward_path: str, policy_path: str) -> None:
    """`reward.input=tokens`: the classifier reads the policy's ids, so its tokenizer must
    be the policy's (the same vocabulary, hence the same ids for the same tokens)."""
    same = _same_vocabulary(policy_path, reward_path)
    if not same:
        why = "has no tokenizer" if same is None else "has another vocabulary"
        raise ConfigError(
            f"{key}.input", "tokens",
            "text, or tokens with a classifier saved with the policy's tokenizer (the "
            f"policy's: {policy_path}); {key}.path={reward_path} {why}",
        )


def _same_vocabulary(policy_path: str, other_path: str) -> bool | None:
    """Whether the tokenizer saved at `other_path` has the policy's vocabulary; None when
    none is saved there."""
    from transformers import AutoTokenizer

    try:
        other = AutoTokenizer.from_pretrained(str(Path(other_path).expanduser()))
    except (OSError, ValueError):
        return None
    return other.get_vocab() == AutoTokenizer.from_pretrained(policy_path).get_vocab()


def _check_lora_targets(config, targets: list[str]) -> None:
    """Every target names a module of the model: built on the meta device, no weights."""
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.pytorch_utils import Conv1D

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    names = [name for name, _ in model.named_modules()]
    linear = sorted({
        name.rsplit(".", 1)[-1] for name, module in model.named_modules()
        if isinstance(module, (torch.nn.Linear, Conv1D)) and name != "lm_head"
    })
    for target in targets:
        if not any(name == target or name.endswith("." + target) for name in names):
            raise ConfigError(
                "model.lora.target_modules", targets,
                "all-linear or module names of this model: " + ", ".join(linear),
            )


def _looks_local(path: str | None) -> bool:
    """A filesystem path rather than a hub id ("owner/name")."""
    if not path:
        return False
    return (
        path.startswith(("/", ".", "~"))
        or path.count("/") > 1
        or Path(path).suffix in (".jsonl", ".json", ".csv", ".parquet", ".arrow")
        or Path(path).exists()
    )
