"""Generalized Advantage Estimation (Schulman et al. 2016) over token sequences."""

from __future__ import annotations

import torch


def compute_gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    *,
    gamma: float,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Spread per-token rewards back over each response, from the last token to the first.

    With `V_T = 0` after the last valid token of each response:
        delta_t = r_t + gamma * V_{t+1} - V_t
        A_t     = delta_t + gamma * lam * A_{t+1}
        returns = A + V
    lam=0 gives one-step TD errors; lam=1 gives Monte-Carlo returns minus the values.

    Args:
        rewards: (B, T) per-token rewards.
        values: (B, T) value estimates of each state.
        mask: (B, T) 1 on response tokens, 0 on padding; every row is a prefix of ones
            (responses are right-padded), so padding contributes nothing.
        gamma: discount per token, in [0, 1].
        lam: GAE lambda, in [0, 1].

    Returns:
        advantages, returns: (B, T) each, zero on padding.

    Example:
        >>> r = torch.tensor([[0.0, 0.0, 1.0]])
        >>> adv, ret = compute_gae(r, torch.zeros(1, 3), torch.ones(1, 3), gamma=1.0, lam=1.0)
        >>> ret.tolist()
        [[1.0, 1.0, 1.0]]
    """
    mask = mask.to(values.dtype)
    rewards, values = rewards * mask, values * mask  # padding: r = 0 and V = 0, so delta = 0
    next_values = torch.cat([values[:, 1:], torch.zeros_like(values[:, :1])], dim=1)  # (B, T)
    deltas = rewards + gamma * next_values - values  # (B, T), all computed at once
    advantages = torch.zeros_like(values)
    running = torch.zeros_like(values[:, 0])  # (B,) A_{t+1}
    for t in reversed(range(values.shape[1])):  # loops over time, vectorised over the batch
        running = deltas[:, t] + gamma * lam * running
        advantages[:, t] = running
    advantages = advantages * mask
    return advantages, (advantages + values) * mask
