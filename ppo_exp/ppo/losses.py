"""The PPO losses and their statistics, as pure functions of plain tensors and floats.

Every tensor is (B, T) over response tokens unless said otherwise; `mask` is 1 on real
response tokens and 0 on padding, and every mean is over the masked tokens only. The
policy and value losses also take (n,) tensors of real tokens alone with `mask=None`
(the packed update's), and then take plain means.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of `x` over positions where `mask` is 1 (a 0-dim tensor); mask=None: all."""
    if mask is None:
        return x.mean()
    return (x * mask).sum() / mask.sum().clamp(min=1)


def masked_var(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Unbiased variance of `x` over positions where `mask` is 1."""
    mean = masked_mean(x, mask)
    n = mask.sum()
    return ((x - mean) ** 2 * mask).sum() / (n - 1).clamp(min=1)


def masked_whiten(
    x: torch.Tensor, mask: torch.Tensor, *, shift_mean: bool = True, eps: float = 1e-8
) -> torch.Tensor:
    """Scale `x` to unit variance over valid positions, and to mean 0 if `shift_mean`.

    Advantages are whitened with the mean removed; rewards keep their mean
    (`shift_mean=False`) so that the sign of the score still means something.
    Padding positions come back as 0.
    """
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    whitened = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        whitened = whitened + mean
    return whitened * mask


def policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor | None,
    *,
    clip_eps: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO's clipped surrogate (Schulman et al. 2017, eq. 7), negated to be minimised.

    ratio = exp(logp - logp_old); the loss takes the worse (larger) of -A*ratio and
    -A*clip(ratio, 1-clip_eps, 1+clip_eps), so a step that would move the policy further
    than clip_eps from the rollout policy earns no extra credit.

    Returns:
        loss, and stats: `clipfrac` (share of tokens where the clip was active),
        `approx_kl` (k3 estimate of KL(old || new), Schulman's "approximating KL"),
        `ratio` (mean ratio). Stats are detached.
    """
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    cost = -advantages
    unclipped = cost * ratio
    clipped = cost * torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    with torch.no_grad():
        stats = {
            "clipfrac": masked_mean((clipped > unclipped).float(), mask),
            "approx_kl": masked_mean((ratio - 1) - log_ratio, mask),
            "ratio": masked_mean(ratio, mask),
        }
    return loss, stats


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor | None,
    *,
    value_clip_eps: float | None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Critic loss 0.5 * (V - R)^2, optionally clipped around the rollout values.

    With `value_clip_eps`, the loss is the larger of the plain and the clipped error
    (clip(V, V_old - eps, V_old + eps) - R)^2, as in PPO2 and TRL. Andrychowicz et al.
    (2020) found this clipping does not help; `value_clip_eps=None` turns it off.

    Returns:
        loss, and stats: `clipfrac` (share of tokens where the clipped error was used).
    """
    error = (values - returns) ** 2
    if value_clip_eps is None:
        return 0.5 * masked_mean(error, mask), {"clipfrac": values.new_zeros(())}
    clipped_values = old_values + torch.clamp(values - old_values, -value_clip_eps, value_clip_eps)
    clipped_error = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(error, clipped_error), mask)
    with torch.no_grad():
        clipfrac = masked_mean((clipped_error > error).float(), mask)
    return loss, {"clipfrac": clipfrac}


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of the categorical distribution at each position: (..., V) -> (...)."""
    log_p = F.log_softmax(logits, dim=-1)
    return -(log_p.exp() * log_p).sum(-1)


def kl_penalty(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: str) -> torch.Tensor:
    """Per-token estimate of KL(policy || reference) from sampled tokens' log-probs.

    k1 = logp - logp_ref: unbiased, but single tokens can be negative.
    k3 = (exp(logp_ref - logp) - 1) - (logp_ref - logp): unbiased and always >= 0
    (Schulman, "Approximating KL divergence", 2020).
    """
    log_ratio = logprobs - ref_logprobs
    if estimator == "k1":
        return log_ratio
    if estimator == "k3":
        return torch.expm1(-log_ratio) + log_ratio
    raise ValueError(f"invalid config: kl_estimator={estimator!r}; accepted: 'k1' or 'k3'")


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    """1 - Var(R - V) / Var(R) over valid tokens: 1 = perfect critic, <= 0 = no better than mean."""
    var_returns = masked_var(returns, mask)
    if var_returns == 0:
        return float("nan")
    return float(1 - masked_var(returns - values, mask) / var_returns)


def logprobs_from_logits(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Log-probability of each chosen token: logits (..., V), tokens (...) -> (...)."""
    return torch.gather(F.log_softmax(logits, dim=-1), -1, tokens.unsqueeze(-1)).squeeze(-1)


def logprobs_and_entropy(
    logits: torch.Tensor, tokens: torch.Tensor, *, temperature: float, entropy_grad: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probs of the chosen tokens and the entropy, both from one log-softmax.

    The same numbers as `logprobs_from_logits(logits / temperature, tokens)` and
    `entropy_from_logits(logits / temperature)`, with two (B, T, V) tensors kept instead
    of five; with `entropy_grad=False` (the entropy is only a statistic, ent_coef = 0)
    the entropy takes one full-vocabulary temporary (p, then p * log p in its place),
    freed at once and never backpropagated.

    Args:
        logits: (B, T, V) raw logits; tokens: (B, T) chosen token ids. Any leading
            shape will do: (n, V) logits and (n,) tokens give (n,) results.
        temperature: logits are divided by it first (the sampling temperature).
        entropy_grad: whether the entropy joins the autograd graph.

    Returns:
        logprobs and entropy (nats), the shape of `tokens`.
    """
    log_p = F.log_softmax(logits / temperature, dim=-1)  # (B, T, V)
    logprobs = torch.gather(log_p, -1, tokens.unsqueeze(-1)).squeeze(-1)
    if entropy_grad and torch.is_grad_enabled():
        return logprobs, -(log_p.exp() * log_p).sum(-1)
    with torch.no_grad():  # off the graph: p * log p in p's own buffer, the same numbers
        entropy = log_p.exp().mul_(log_p).sum(-1).neg_()
    return logprobs, entropy

