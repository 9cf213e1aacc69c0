"""What each speed-up of the trainer is worth: the same rollout, one technique undone at a time.

    python -m ppo_exp.bench techniques [--rounds N] [--threads N]

One process builds the default trainer and samples one rollout batch, then times the
scoring forwards and the replay update (`ppo_epochs` × `num_minibatches` steps) with
every technique on, and with each one switched back to what the trainer did before,
alternating the variants round by round. Switching back is done from outside (the
trainer has no such switches): padded minibatches instead of packed ones (trimmed to their
longest response, then also untrimmed: trimming only matters without packing), separate
log-softmaxes with the entropy on the graph, a per-parameter (foreach) AdamW, and the
Python-formula GELU.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Iterator

import torch

from ppo_exp.bench.clock import patched


@contextlib.contextmanager
def padded(trainer) -> Iterator[None]:
    """The update runs padded rows (trimmed to the longest response), not packed ones."""
    with patched(trainer.replay, "forward", trainer.model), \
            patched(trainer.replay, "packed", False):
        yield


@contextlib.contextmanager
def full_length(trainer) -> Iterator[None]:
    """Every minibatch runs to the batch's longest response (no trimming)."""
    from ppo_exp.ppo import replay as module

    original = module.minibatch_of

    def untrimmed(rollout, advantages, returns, i, length, tokens=None):
        return original(rollout, advantages, returns, i, rollout.response.shape[1], tokens)

    with patched(module, "minibatch_of", untrimmed):
        yield


@contextlib.contextmanager
def separate_softmaxes(trainer) -> Iterator[None]:
    """Log-probs and entropy from two log-softmaxes, the entropy kept on the graph."""
    from ppo_exp.ppo import losses

    def old(logits, tokens, *, temperature, entropy_grad):
        logits = logits / temperature
        return (losses.logprobs_from_logits(logits, tokens), losses.entropy_from_logits(logits))

    with patched(losses, "logprobs_and_entropy", old):
        yield


@contextlib.contextmanager
def foreach_adamw(trainer) -> Iterator[None]:
    """AdamW stepping parameter lists (foreach) instead of one fused kernel."""
    fused = trainer.replay.optimizer
    groups = [{"params": g["params"], "lr": g["lr"]} for g in fused.param_groups]
    trainer.replay.optimizer = torch.optim.AdamW(
        groups, eps=fused.defaults["eps"], weight_decay=0.0, foreach=True
    )
    try:
        yield
    finally:
        trainer.replay.optimizer = fused


@contextlib.contextmanager
def python_gelu(trainer) -> Iterator[None]:
    """GPT-2's `gelu_new`, five Python-level ops, instead of the one-kernel tanh GELU."""
    from transformers.activations import GELUTanh, NewGELUActivation

    swapped = []
    for model in (trainer.model, trainer.ref.model):
        for module in model.modules() if model is not None else ():
            if isinstance(getattr(module, "act", None), GELUTanh):
                swapped.append((module, module.act))
                module.act = NewGELUActivation()
    try:
        yield
    finally:
        for module, act in swapped:
            module.act = act


def stacked(first: Callable, second: Callable, trainer) -> contextlib.ExitStack:
    """Both techniques undone at once."""
    stack = contextlib.ExitStack()
    stack.enter_context(first(trainer))
    stack.enter_context(second(trainer))
    return stack


VARIANTS: dict[str, Callable] = {
    "all techniques": contextlib.nullcontext,
    "without packing": padded,
    "without packing or trimming": lambda trainer: stacked(padded, full_length, trainer),
    "without one log-softmax": separate_softmaxes,
    "without fused AdamW": foreach_adamw,
    "without one-kernel GELU": python_gelu,
}


def measure(
    *, rounds: int, threads: int, clock: str = "wall", **config
) -> dict[str, dict[str, float]]:
    """Median seconds of one rollout and of one update, per variant.

    Args:
        rounds: alternated rounds over the variants.
        threads: torch threads.
        clock: "wall", or "cpu" (this process's CPU time, for a loaded machine).
        config: PPOConfig keys changed from the defaults (the smoke test's tiny shapes).
    """
    from ppo_exp.config import PPOConfig
    from ppo_exp.ppo.trainer import PPOTrainer

    torch.set_num_threads(threads)
    now = time.process_time if clock == "cpu" else time.perf_counter
    trainer = PPOTrainer(PPOConfig(**{"eval_prompts": 8, **config}))
    prompts = trainer.train_prompts[: trainer.cfg.batch_size]
    rollout = trainer.rollout(prompts)
    advantages, returns = trainer.advantages(rollout, trainer.token_rewards(rollout))
    times: dict[str, dict[str, list[float]]] = {v: {"rollout": [], "update": []} for v in VARIANTS}
    for _ in range(rounds):
        for name, variant in VARIANTS.items():
            with variant(trainer):
                torch.manual_seed(0)
                started = now()
                trainer.rollout(prompts)
                middle = now()
                trainer.update(rollout, advantages, returns)
                ended = now()
            times[name]["rollout"].append(middle - started)
            times[name]["update"].append(ended - middle)
    return {name: {part: statistics.median(values) for part, values in parts.items()}
            for name, parts in times.items()}


def table(results: dict[str, dict[str, float]]) -> str:
    """Markdown: each variant's seconds and how much slower than all techniques on."""
    best = results["all techniques"]
    rows = ["| variant | rollout s | update s | rollout + update | vs all techniques |",
            "| --- | --- | --- | --- | --- |"]
    for name, r in results.items():
        total = r["rollout"] + r["update"]
        ratio = total / (best["rollout"] + best["update"])
        rows.append(f"| {name} | {r['rollout']:.3f} | {r['update']:.3f} | {total:.3f} | "
                    f"{ratio:.2f}× |")
    return "\n".join(rows)
