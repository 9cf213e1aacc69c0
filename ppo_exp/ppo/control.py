"""Small controls of the PPO loop, as pure functions: the adaptive KL coefficient, the
replay's early stop, and the split of the trainable parameters into policy and critic."""

from __future__ import annotations

import math

import torch
from torch import nn

KL_HORIZON_SHARE = 10  # kl_horizon=null: a tenth of the run's rollouts
KL_ERROR_CLIP = 0.2  # Ziegler et al. 2019: the proportional error is clipped to ±0.2


def kl_horizon(horizon: int | None, *, iterations: int, batch_size: int) -> int:
    """The adaptive controller's horizon in rollouts: the setting, or a tenth of the run.

    With the error clipped to ±0.2, a controller of horizon H can move the coefficient by
    at most exp(±0.2 · rollouts / H) over a run: ±22% when H is the whole run, e^±2 (7.4×)
    when it is a tenth; a fixed 10000 does nothing over a run of a few thousand rollouts.
    """
    if horizon is not None:
        return horizon
    return max(1, iterations * batch_size // KL_HORIZON_SHARE)


def adaptive_kl_coef(
    coef: float, kl: float, *, target: float, batch_size: int, horizon: int
) -> float:
    """One step of the adaptive KL controller (Ziegler et al. 2019, TRL's AdaptiveKLController).

    Args:
        coef: the current KL coefficient.
        kl: the batch's mean KL to the reference, nats per response.
        target: the KL it steers towards (`kl_target`).
        batch_size: rollouts in the batch.
        horizon: rollouts over which a constant error would move the coefficient by e^error.
    """
    error = min(max(kl / target - 1, -KL_ERROR_CLIP), KL_ERROR_CLIP)
    return coef * (1 + error * batch_size / horizon)


def stop_replay(approx_kl: float | torch.Tensor, target_kl: float | None) -> bool:
    """Stop the replay before this minibatch's step: the policy already moved too far.

    `approx_kl` is measured on the minibatch about to be stepped, with the parameters
    every earlier step left, so the check has no lag: with one minibatch per epoch it can
    stop after the first epoch (a check after each epoch sees epoch 1's KL = 0). A tensor
    is read from its device only when `target_kl` is set.
    """
    if target_kl is None:
        return False
    approx_kl = float(approx_kl)
    return approx_kl > target_kl or not math.isfinite(approx_kl)


CRITIC_MODULES = ("critic.", "value_head.")  # ActorCritic's critic trunk and value head


def param_groups(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """The trainable parameters, split into the policy's and the critic's.

    The critic is the value head, plus the critic trunk when it is separate; a shared
    trunk belongs to the policy (its gradient is pg + vf_coef * value loss).
    """
    policy, critic = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (critic if name.startswith(CRITIC_MODULES) else policy).append(param)
    return policy, critic
