"""Train a reward model on preference pairs. In the order it runs:

1. load the base checkpoint as a one-output sequence classifier (a fresh score head);
2. each epoch: shuffled minibatches of pairs, Bradley-Terry loss on the score gap;
3. after each epoch: held-out loss and accuracy (and, where the pairs carry gold
   scores, accuracy against the noise-free gold labels);
4. normalise: score the policy's own samples, store the gain and bias that give them
   mean 0 and std 1 in the model's config (`reward_normalisation`).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import datasets
import numpy as np
import torch

from ppo_exp.reward_model.config import RewardModelConfig
from ppo_exp.reward_model.loss import bradley_terry_loss, normalisation, preference_accuracy
from ppo_exp.reward_model.preferences import as_text, sample_responses
from ppo_exp.task.rewards import ensure_pad_token, model_scorer

LogMetrics = Callable[[dict[str, float], int], None]


@dataclass
class Pairs:
    """Preference pairs as texts ready to score. N = pairs."""

    chosen: list[str]
    rejected: list[str]
    gold_chosen: torch.Tensor | None = None  # (N,) gold scores, where known
    gold_rejected: torch.Tensor | None = None  # (N,)


def to_pairs(data: datasets.Dataset, tokenizer, *, text: str) -> Pairs:
    """Texts of a split of `load_preferences`: prompt + text when text="full"."""
    prompts = data["prompt"] if text == "full" and "prompt" in data.column_names else None
    texts = {}
    for role in ("chosen", "rejected"):
        values = [as_text(v, tokenizer) for v in data[role]]
        texts[role] = [p + v for p, v in zip(prompts, values, strict=True)] if prompts else values
    gold = {
        role: torch.tensor(data[f"gold_{role}"], dtype=torch.float32)
        for role in ("chosen", "rejected")
        if f"gold_{role}" in data.column_names
    }
    return Pairs(texts["chosen"], texts["rejected"], gold.get("chosen"), gold.get("rejected"))


def load_base(path: str):
    """A one-output sequence classifier (new score head) and its tokenizer, with a pad token."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from ppo_exp.task.base_model import fused_kernels

    tokenizer = AutoTokenizer.from_pretrained(path)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "newly initialized: score.weight" is the point here
    try:
        # GPT-2's GELU as one kernel, as the policy's (the saved config records it)
        model = AutoModelForSequenceClassification.from_pretrained(
            path, num_labels=1, **fused_kernels(path)
        )
    finally:
        hf_logging.set_verbosity(verbosity)
    ensure_pad_token(tokenizer, model)
    model.config.reward_normalisation = None  # a base that is a reward model: fit anew
    return model, tokenizer


def evaluate(model, tokenizer, pairs: Pairs, *, max_length: int) -> dict[str, float]:
    """Held-out Bradley-Terry loss and accuracy (and accuracy against the gold labels)."""
    score = model_scorer(model, tokenizer, label=0, max_length=max_length)
    chosen, rejected = score(pairs.chosen), score(pairs.rejected)  # (N,) each
    metrics = {
        "eval/loss": float(bradley_terry_loss(chosen, rejected)),
        "eval/accuracy": preference_accuracy(chosen, rejected),
    }
    if pairs.gold_chosen is not None:
        # Noise-free labels: the pair ordered by its gold scores (no ties: they were dropped).
        gold_order = torch.sign(pairs.gold_chosen - pairs.gold_rejected)  # (N,) +1 or -1
        metrics["eval/accuracy_gold"] = float(
            (torch.sign(chosen - rejected) == gold_order).float().mean()
        )
        metrics["eval/label_agreement"] = float((gold_order > 0).float().mean())
    return metrics


def train_reward_model(
    cfg: RewardModelConfig, train: Pairs, test: Pairs, *, base: str, log_metrics: LogMetrics
):
    """Train on `train`, evaluate on `test` after every epoch, fit the normalisation.

    Args:
        cfg: the app's settings (sizes, optimiser, normalisation).
        train, test: training and held-out pairs.
        base: the checkpoint to start from (a causal LM or classifier dir, or hub id).
        log_metrics: receives each epoch's metrics (step = epoch; loss/train, eval/...).

    Returns:
        (model, tokenizer, last metrics): the model in eval mode, its config holding
        `reward_normalisation` (gain, bias) when `cfg.normalise.samples` > 0.
    """
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    model, tokenizer = load_base(base)  # 1
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    order_rng = torch.Generator().manual_seed(cfg.seed)
    metrics: dict[str, float] = {}
    n = len(train.chosen)
    for epoch in range(1, cfg.epochs + 1):
        model.train()  # 2
        losses, accuracies = [], []
        for idx in torch.randperm(n, generator=order_rng).split(cfg.batch_size):
            texts = [train.chosen[i] for i in idx] + [train.rejected[i] for i in idx]
            batch = tokenizer(
                texts, padding=True, truncation=True, max_length=cfg.max_length, return_tensors="pt"
            )
            scores = model(**batch).logits[:, 0]  # (2b,): chosen, then rejected
            chosen, rejected = scores[: len(idx)], scores[len(idx) :]
            loss = bradley_terry_loss(chosen, rejected)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            optimizer.step()
            losses.append(float(loss.detach()))
            accuracies.append(preference_accuracy(chosen.detach(), rejected.detach()))
        metrics = {
            "loss/train": float(np.mean(losses)),
            "train/accuracy": float(np.mean(accuracies)),
        }
        metrics |= evaluate(model, tokenizer, test, max_length=cfg.max_length)  # 3
        log_metrics(metrics, epoch)
    model.eval()
    if cfg.normalise.samples:  # 4
        gain, bias = fit_normalisation(cfg, model, tokenizer)
        model.config.reward_normalisation = {"gain": gain, "bias": bias}
        metrics |= {"normalise/gain": gain, "normalise/bias": bias}
        log_metrics({"normalise/gain": gain, "normalise/bias": bias}, cfg.epochs)
    return model, tokenizer, metrics


def fit_normalisation(cfg: RewardModelConfig, model, tokenizer) -> tuple[float, float]:
    """Gain and bias that make the raw scores of the policy's own samples mean 0, std 1.

    The policy (`cfg.normalise.policy`, by default the embedded tiny model) answers
    `cfg.normalise.samples` training prompts, sampled as in the PPO rollouts.
    """
    from ppo_exp.data import TRAIN_PROMPTS
    from ppo_exp.task.base_model import load_causal_lm, tiny_model_path
    from ppo_exp.task.prompts import make_prompts

    n = cfg.normalise
    policy, policy_tokenizer = load_causal_lm(n.policy or tiny_model_path())
    generator = torch.Generator().manual_seed(cfg.seed)
    pool = make_prompts(TRAIN_PROMPTS, split="train")
    prompts = [pool[i] for i in torch.randint(len(pool), (n.samples,), generator=generator)]
    responses = sample_responses(
        policy,
        policy_tokenizer,
        prompts,
        temperature=n.temperature,
        max_new_tokens=n.max_new_tokens,
        generator=generator,
    )
    raw = model_scorer(model, tokenizer, label=0, max_length=cfg.max_length)
    texts = (
        responses
        if cfg.text == "response"
        else [p + r for p, r in zip(prompts, responses, strict=True)]
    )
    return normalisation(raw(texts))
