"""Numeric guards of the PPO loop, as small pure functions the trainer calls.

- Non-finite numbers are caught where they first appear (scores, values and log-probs of
  a rollout; a minibatch's loss and gradient norm) instead of being logged as NaN while
  the optimiser steps on NaN gradients until sampling crashes an iteration later.
  `on_nonfinite=stop` ends the run with `TrainingFault` naming the iteration and the
  quantity; `on_nonfinite=skip` skips that minibatch's step (rollout faults always stop).
- Divergence: approx-KL above `max_approx_kl` for `divergence_patience` iterations in a
  row warns (`on_divergence=warn`) or ends the run (`on_divergence=fail`).
"""

from __future__ import annotations

import functools
import logging
import math
import operator
from collections.abc import Mapping
from typing import Any

log = logging.getLogger("ppo_exp")


class TrainingFault(RuntimeError):
    """Training cannot go on (a non-finite number, a diverged policy); the message says why."""


def first_nonfinite(quantities: Mapping[str, Any]) -> str | None:
    """The name of the first quantity (float or tensor) holding a NaN or an infinity.

    All the tensors are checked on their device and read back once together; which one
    is bad is looked for only when something is.
    """
    checks = [v.isfinite().all() for v in quantities.values() if hasattr(v, "isfinite")]
    floats = [v for v in quantities.values() if not hasattr(v, "isfinite")]
    if all(math.isfinite(v) for v in floats) and (
        not checks or bool(functools.reduce(operator.and_, checks))
    ):
        return None
    for name, value in quantities.items():
        if hasattr(value, "isfinite"):  # a tensor
            if not bool(value.isfinite().all()):
                return name
        elif not math.isfinite(value):
            return name
    return None


def nonfinite_fault(iteration: int, quantity: str, *, where: str, hint: str = "") -> TrainingFault:
    """The fault that ends a run on a non-finite `quantity` first seen at `where`."""
    return TrainingFault(
        f"iteration {iteration}: non-finite {quantity} in the {where}"
        + (f"; {hint}" if hint else "")
    )


def divergence_streak(streak: int, approx_kl: float, bound: float | None) -> int:
    """Iterations in a row whose approx-KL exceeded `bound` (0 when off or back below)."""
    if bound is None:
        return 0
    return streak + 1 if not approx_kl <= bound else 0  # NaN counts as beyond


def check_divergence(
    iteration: int, streak: int, approx_kl: float, *, bound: float | None, patience: int,
    fail: bool,
) -> None:
    """Warn (or raise `TrainingFault` when `fail`) once the streak reaches `patience`."""
    if bound is None or streak < patience:
        return
    message = (
        f"iteration {iteration}: policy/approx_kl={approx_kl:.3g} > max_approx_kl={bound:g} "
        f"for {streak} iterations in a row: the policy is diverging (lower lr or ppo_epochs, "
        "or set target_kl)"
    )
    if fail:
        raise TrainingFault(message + "; on_divergence=fail")
    if streak == patience:  # once per streak, not every iteration
        log.warning(message)
