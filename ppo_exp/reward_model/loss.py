"""The maths of reward modelling, as small pure functions on plain tensors and floats."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bradley_terry_loss(chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    """Mean of -log sigmoid(r_chosen - r_rejected): the Bradley-Terry negative log-likelihood.

    Args:
        chosen: (N,) reward-model scores of the preferred texts.
        rejected: (N,) scores of the other texts of the same pairs.

    Returns:
        A scalar tensor (differentiable); log(2) when the scores are equal.
    """
    # logsigmoid is exact for large margins, where log(sigmoid(x)) would underflow to -inf.
    return -F.logsigmoid(chosen - rejected).mean()


def preference_accuracy(chosen: torch.Tensor, rejected: torch.Tensor) -> float:
    """Share of pairs (N,) whose preferred text scores strictly higher; ties count as wrong."""
    return float((chosen > rejected).float().mean())


def annotate(
    gold_a: torch.Tensor,
    gold_b: torch.Tensor,
    *,
    temperature: float,
    label_noise: float,
    generator: torch.Generator,
) -> torch.Tensor:
    """A simulated annotator: which of two texts it prefers, given their gold scores.

    It prefers a with the Bradley-Terry probability sigmoid((gold_a - gold_b) / temperature)
    (temperature 0: always the higher score), then flips each label with probability
    `label_noise`, as a careless rater would.

    Args:
        gold_a, gold_b: (N,) gold scores of the two texts of each pair.
        temperature: >= 0; how much the annotator's choice follows the score gap.
        label_noise: in [0, 0.5); share of labels flipped uniformly at random.
        generator: the random stream (so the labels are reproducible).

    Returns:
        (N,) bool: True where a is preferred.
    """
    gap = gold_a - gold_b
    if temperature == 0:
        p_a = (gap > 0).float() + 0.5 * (gap == 0).float()
    else:
        p_a = torch.sigmoid(gap / temperature)
    prefers_a = torch.rand(gap.shape, generator=generator) < p_a
    flip = torch.rand(gap.shape, generator=generator) < label_noise
    return prefers_a ^ flip


def normalisation(scores: torch.Tensor) -> tuple[float, float]:
    """Gain and bias so that gain * scores + bias has mean 0 and (population) std 1.

    Args:
        scores: (N,) raw reward-model scores of the policy's own samples, N >= 2.

    Returns:
        (gain, bias) = (1 / std, -mean / std); gain 1 and bias -mean when all scores are
        equal (nothing to scale).
    """
    mean = float(scores.mean())
    std = float(scores.std(unbiased=False))
    if std == 0:
        return 1.0, -mean
    return 1.0 / std, -mean / std
