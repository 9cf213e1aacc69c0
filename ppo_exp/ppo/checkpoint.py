"""Checkpoints of a training run: written atomically, read back to resume it exactly.

One checkpoint, `<job dir>/checkpoints/iteration_NNNN/`:

    policy/                  `save_pretrained`: safetensors weights (LoRA: the adapters only)
                             and the tokenizer, so the folder loads as a model on its own
    critic/                  the separate critic's trunk (LoRA: its adapters); absent if shared
    value_head.safetensors   the critic's float32 value head
    trainer_state.pt         optimiser, LR schedule, loss scaler, KL coefficient, RNG states,
                             learning-curve history and the last value of every metric
    checkpoint.json          iteration, the config it was made with, and the caller's `meta`
                             (the harness keeps its MLflow run id there)

A checkpoint is written into a temporary sibling folder, flushed to disk and renamed into
place (a rename is atomic on POSIX); only then are older checkpoints removed. A crash at
any moment leaves the previous checkpoint whole, and `latest` never sees a partial one.
Free of Hydra and MLflow: the harness decides where checkpoints go and what `meta` holds.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ppo_exp.locations import mask_secrets  # no password in a job dir's checkpoint.json

CHECKPOINTS = "checkpoints"  # the folder of a job's checkpoints, inside its job dir
INFO = "checkpoint.json"
STATE = "trainer_state.pt"
VALUE_HEAD = "value_head.safetensors"
_NAME = re.compile(r"iteration_(\d+)")
# Keys a resume may change: the run's length and how often it measures or saves, where it
# runs and tracks, and a study's bookkeeping (a retried trial has a new number). Changing
# `iterations` also moves what depends on the run length (lr_decay, kl_horizon=null).
BUDGET_KEYS = (
    "iterations", "eval_every", "sample_every", "checkpoint_every", "resume", "threads",
    "mlflow", "optuna",
)


def is_due(iteration: int, *, every: int | None, iterations: int) -> bool:
    """Whether iteration `iteration` ends with a checkpoint: every `every`, and the last."""
    return iteration == iterations or bool(every) and iteration % every == 0


def latest(job_dir: Path) -> Path | None:
    """The newest complete checkpoint in `job_dir`, or None if it has none."""
    found = [
        (int(match.group(1)), path)
        for path in (Path(job_dir) / CHECKPOINTS).glob("iteration_*")
        if (match := _NAME.fullmatch(path.name)) and (path / INFO).is_file()
    ]
    return max(found)[1] if found else None


def find(path: Path) -> Path | None:
    """The checkpoint `path` names: a checkpoint folder itself, or a job dir's newest."""
    path = Path(path)
    return path if (path / INFO).is_file() else latest(path)


def read_info(checkpoint: Path) -> dict[str, Any]:
    """What `checkpoint.json` holds: iteration, config, meta (reads no weights)."""
    return json.loads((Path(checkpoint) / INFO).read_text())


def config_differences(
    saved: dict[str, Any], current: dict[str, Any], *, ignored: tuple[str, ...] = BUDGET_KEYS
) -> dict[str, tuple[Any, Any]]:
    """Dotted key -> (saved, current) for every value that differs, but the `ignored` keys.

    >>> config_differences({"lr": 1, "model": {"r": 2}}, {"lr": 1, "model": {"r": 4}})
    {'model.r': (2, 4)}
    """
    flat_saved, flat_current = _flatten(saved), _flatten(current)
    return {
        key: (flat_saved.get(key, "<absent>"), flat_current.get(key, "<absent>"))
        for key in sorted(flat_saved.keys() | flat_current.keys())
        if key.split(".")[0] not in ignored
        and flat_saved.get(key, "<absent>") != flat_current.get(key, "<absent>")
    }


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


# -- writing ----------------------------------------------------------------------------


def save(
    job_dir: Path,
    iteration: int,
    *,
    model: nn.Module,
    tokenizer: Any,
    state: dict[str, Any],
    config: dict[str, Any],
    meta: dict[str, Any],
) -> Path:
    """Write checkpoint `iteration` of `model` (an `ActorCritic`) atomically; return it.

    Args:
        job_dir: the job's folder; checkpoints go to its `checkpoints/`.
        model: policy, optional critic and value head, each saved on its own.
        tokenizer: saved with the policy, so `policy/` loads as a model by itself.
        state: the trainer's own state (`torch.save`-able: tensors, numbers, lists).
        config: the run's config as plain data, compared on resume.
        meta: anything the caller needs back on resume (e.g. a tracking run id).
    """
    root = Path(job_dir) / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"iteration_{iteration:04d}"
    temporary = root / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir()
    model.policy.save_pretrained(temporary / "policy", safe_serialization=True)
    tokenizer.save_pretrained(temporary / "policy")
    if model.critic is not None:
        model.critic.save_pretrained(temporary / "critic", safe_serialization=True)
    save_file(_contiguous(model.value_head.state_dict()), temporary / VALUE_HEAD)
    torch.save(state, temporary / STATE)
    info = {"iteration": iteration, "config": config, "meta": meta}
    (temporary / INFO).write_text(json.dumps(info, indent=1))
    _flush(temporary)
    if final.exists():  # resumed from an older checkpoint of this folder: replace it
        shutil.rmtree(final)
    os.rename(temporary, final)
    _flush_folder(root)
    for other in root.iterdir():  # older checkpoints and any crashed write's leftovers
        if other != final and (_NAME.fullmatch(other.name) or other.name.startswith(".tmp-")):
            shutil.rmtree(other, ignore_errors=True)
    return final


def _contiguous(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: t.detach().contiguous() for name, t in tensors.items()}


def _flush(folder: Path) -> None:
    """fsync every file under `folder`, and the folders: the rename publishes whole files."""
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
    for sub in [folder, *(p for p in folder.rglob("*") if p.is_dir())]:
        _flush_folder(sub)


def _flush_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


# -- reading ----------------------------------------------------------------------------


def load_weights(checkpoint: Path, model: nn.Module) -> None:
    """Put the checkpoint's trained weights into `model`, built as the run first built it.

    Only what trains is read (full weights, or LoRA adapters); a LoRA base and the
    reference model keep the weights they were loaded with.
    """
    checkpoint = Path(checkpoint)
    _load_pretrained(model.policy, checkpoint / "policy")
    if model.critic is not None:
        _load_pretrained(model.critic, checkpoint / "critic")
    model.value_head.load_state_dict(load_file(checkpoint / VALUE_HEAD))


def _load_pretrained(module: nn.Module, folder: Path) -> None:
    """Load what `save_pretrained` wrote in `folder` into `module`, checking every key."""
    if getattr(module, "peft_config", None) is not None:  # a peft model: adapters only
        from peft import set_peft_model_state_dict

        result = set_peft_model_state_dict(module, load_file(folder / "adapter_model.safetensors"))
        if result.unexpected_keys:
            raise ValueError(f"{folder}: adapter weights the model lacks: {result.unexpected_keys}")
        return
    weights: dict[str, torch.Tensor] = {}
    for file in sorted(folder.glob("*.safetensors")):  # one file, or the shards of a big one
        weights.update(load_file(file))
    missing, unexpected = module.load_state_dict(weights, strict=False)
    # save_pretrained writes a tied weight once (the LM head shares the embeddings)
    loaded = {p.data_ptr() for name, p in module.state_dict().items() if name in weights}
    untied = [name for name in missing if module.state_dict()[name].data_ptr() not in loaded]
    if unexpected or untied:
        raise ValueError(f"{folder}: weights do not match the model: {unexpected or untied}")


def load_state(checkpoint: Path) -> dict[str, Any]:
    """The trainer state saved with the checkpoint (on the CPU)."""
    return torch.load(Path(checkpoint) / STATE, map_location="cpu", weights_only=True)


# -- a trainer's checkpoint -------------------------------------------------------------


def save_trainer(trainer: Any, iteration: int) -> Path:
    """Checkpoint `iteration` of a `PPOTrainer` into its job dir, with its `meta`."""
    state = {
        "replay": trainer.replay.state_dict(),  # optimiser, loss scaler, LR schedule
        "kl_coef": trainer.kl_coef,  # the adaptive KL controller's
        "divergence_streak": trainer.divergence_streak,
        "eval_history": trainer.eval_history,  # the learning-curve areas read it
        "last": trainer.last,  # what train() returns, should no iteration be left
        "rng": rng_states({"prompts": trainer.prompt_rng}),
    }
    return save(
        trainer.job_dir, iteration, model=trainer.model, tokenizer=trainer.tokenizer,
        state=state, config=mask_secrets(dataclasses.asdict(trainer.cfg)), meta=trainer.meta,
    )


def restore_trainer(trainer: Any, folder: Path) -> None:
    """Put checkpoint `folder` back into a `PPOTrainer` built with the same config."""
    load_weights(folder, trainer.model)
    state = load_state(folder)
    trainer.replay.load_state_dict(state["replay"])
    trainer.kl_coef, trainer.divergence_streak = state["kl_coef"], state["divergence_streak"]
    trainer.eval_history, trainer.last = state["eval_history"], state["last"]
    set_rng_states(state["rng"], {"prompts": trainer.prompt_rng})
    trainer.start = read_info(folder)["iteration"]


# -- random number generators -----------------------------------------------------------


def rng_states(generators: dict[str, torch.Generator]) -> dict[str, Any]:
    """Every random state a run draws from: torch (CPU, CUDA), numpy, python, `generators`.

    Plain tensors and lists only, so `torch.load(weights_only=True)` reads them back.
    """
    kind, keys, position, has_gauss, gauss = np.random.get_state()
    version, python_state, python_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, gauss],
        "python": [version, list(python_state), python_gauss],
        "generators": {name: g.get_state() for name, g in generators.items()},
    }


def set_rng_states(states: dict[str, Any], generators: dict[str, torch.Generator]) -> None:
    """Restore what `rng_states` recorded, so sampling goes on as if never stopped."""
    torch.set_rng_state(states["torch"])
    if states["cuda"]:
        torch.cuda.set_rng_state_all(states["cuda"])
    kind, keys, position, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, gauss))
    version, python_state, python_gauss = states["python"]
    random.setstate((version, tuple(python_state), python_gauss))
    for name, generator in generators.items():
        generator.set_state(states["generators"][name])
