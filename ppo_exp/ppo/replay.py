"""Step 5 of a PPO iteration: `ppo_epochs` passes over shuffled minibatches of a rollout.

`Replay` owns what the update changes: the optimiser (AdamW, the critic in a parameter
group of its own), the float16 loss scaler and the learning-rate schedule. Each minibatch
minimises policy loss + vf_coef * value loss - ent_coef * entropy, with its gradients
clipped per group and non-finite steps skipped or stopped on.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import torch

from ppo_exp.config import PPOConfig
from ppo_exp.ppo import control, guards, losses
from ppo_exp.ppo.hardware import autocast
from ppo_exp.ppo.models import ActorCritic
from ppo_exp.ppo.rollout import Minibatch, ResponseTokens, Rollout, minibatch_of

# What `Replay.clipped_step` checks, in the order of its faults
QUANTITIES = ("loss/total", "gradient norm of the policy", "gradient norm of the critic")


class Replay:
    """The update of a rollout: `update()` runs the replay epochs and steps the optimiser."""

    def __init__(
        self, cfg: PPOConfig, model: ActorCritic, *, device: torch.device, dtype: torch.dtype
    ):
        self.cfg, self.model, self.device, self.dtype = cfg, model, device, dtype
        # The update's forward: the real tokens only, packed (the default); or the padded
        # rows, eager or compiled (same parameters; dynamic=True: minibatches trimmed to
        # their longest response change shape without recompiling).
        self.packed = cfg.pack_minibatches
        if self.packed:
            self.forward = model.packed
        else:
            self.forward = torch.compile(model, dynamic=True) if cfg.compile else model
        # All of it, or LoRA adapters + value head; the critic in a parameter group of its
        # own, with its own step size (vf_coef * vf_lr) and gradient clipping. fused: one
        # kernel steps every parameter (not a loop over them), the same update up to
        # floating-point order.
        self.groups = control.param_groups(model)
        self.optimizer = torch.optim.AdamW(
            [
                {"params": self.groups[0], "lr": cfg.lr},
                {"params": self.groups[1], "lr": cfg.vf_coef * cfg.vf_lr},
            ],
            eps=cfg.adam_eps,
            weight_decay=0.0,
            fused=True,
        )
        # float16 gradients underflow without loss scaling; a disabled scaler is a no-op.
        self.scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
        # lr_decay: linear from lr at the first update to 0 at the last (CleanRL's anneal_lr)
        self.lr_schedule = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: lr_factor(step, cfg.iterations, decay=cfg.lr_decay)
        )

    def state_dict(self) -> dict:
        """The optimiser's, the loss scaler's and the LR schedule's state (a checkpoint's)."""
        return {
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "lr_schedule": self.lr_schedule.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.lr_schedule.load_state_dict(state["lr_schedule"])

    def update(
        self, rollout: Rollout, advantages: torch.Tensor, returns: torch.Tensor, *,
        iteration: int = 0,
    ) -> dict[str, float]:
        """Replay epochs over `rollout`; the mean of each minibatch statistic, the number of
        epochs run and of minibatches skipped. `iteration` names a numeric fault."""
        cfg = self.cfg
        batch = len(rollout.scores)
        minibatch = batch // cfg.num_minibatches
        lengths, tokens = self.layout(rollout, advantages, returns)  # once for all epochs
        # Per minibatch that reached its step, kept on the device and read once, at the end:
        stats: list[Statistics] = []  # its statistics
        faults: list[torch.Tensor] = []  # (3,) bool: its loss or a gradient norm non-finite
        skipping: torch.Tensor | None = None  # on_nonfinite=stop: a fault so far, on the device
        stopped = False
        self.model.update_mode(True)
        for _ in range(cfg.ppo_epochs):
            order = torch.randperm(batch)
            for start in range(0, batch, minibatch):
                i = order[start : start + minibatch]
                minibatch_stats = self.gradients(rollout, i, advantages, returns, lengths, tokens)
                # CleanRL's early stop, without its lag: this minibatch's approx-KL is
                # measured after every earlier step, so its own step is skipped. Before the
                # update's first step the policy is the one that sampled: its approx-KL is
                # 0 but for float rounding (packed rows: ~1e-9 on some CPUs), not checked.
                if stats and control.stop_replay(
                    minibatch_stats["policy/approx_kl"], cfg.target_kl
                ):
                    stopped = True
                    break
                fault, skipped = self.clipped_step(minibatch_stats["loss/total"], skipping)
                if cfg.on_nonfinite == "stop":  # nothing steps after a fault, until it is read
                    skipping = skipped
                faults.append(fault)
                stats.append(minibatch_stats)
            if stopped:
                break
        self.model.update_mode(False)
        return self.summary(read(stats), faults, iteration)

    def clipped_step(
        self, loss: torch.Tensor, skipping: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Clip the policy's and the critic's gradients, each on its own, and step, unless
        the loss or a gradient norm is not finite, or `skipping` (a 0-dim bool) is set.

        Decided on the device, nothing read back: the fused AdamW skips the step itself
        (`found_inf`, as for a loss scaler), parameters, moments and step count untouched
        (an unfused optimiser reads the decision back instead).
        Returns the (3,) bool faults of the loss and the two gradient norms, and whether
        the step was skipped (0-dim bool). In float16 the loss scaler skips its own inf
        steps: no faults, None.
        """
        self.scaler.unscale_(self.optimizer)
        max_norm = self.cfg.max_grad_norm or math.inf  # infinite: measured, not clipped
        norms = [torch.nn.utils.clip_grad_norm_(group, max_norm) for group in self.groups]
        if self.scaler.is_enabled():
            self.scaler.step(self.optimizer)
            self.scaler.update()
            return torch.zeros(len(QUANTITIES), dtype=torch.bool, device=loss.device), None
        fault = ~torch.stack([q.float() for q in (loss, *norms)]).isfinite()
        skip = fault.any() if skipping is None else fault.any() | skipping
        if not self.optimizer.defaults.get("fused"):  # e.g. the techniques benchmark's
            if not skip:  # one read from the device
                self.optimizer.step()
            return fault, skip
        self.optimizer.found_inf = skip.float()
        try:
            self.optimizer.step()
        finally:
            del self.optimizer.found_inf
        return fault, skip

    def summary(
        self, stats: dict[str, list[float]], faults: list[torch.Tensor], iteration: int
    ) -> dict[str, float]:
        """The mean of each statistic over the minibatches that stepped, the epochs run and
        the minibatches skipped; on_nonfinite=stop raises on the first fault instead.
        Minibatch k (in the order run) belongs to epoch k // num_minibatches."""
        flags = torch.stack(faults).tolist() if faults else []
        bad = [any(row) for row in flags]
        if any(bad) and self.cfg.on_nonfinite == "stop":
            first = flags[bad.index(True)]
            raise guards.nonfinite_fault(
                iteration, QUANTITIES[first.index(True)], where="update",
                hint="on_nonfinite=skip skips such minibatches; lower lr or set max_grad_norm",
            )
        kept = [k for k, skipped in enumerate(bad) if not skipped]
        metrics = {name: float(np.mean([values[k] for k in kept]))
                   for name, values in stats.items() if kept}
        per_epoch = self.cfg.num_minibatches
        metrics["policy/epochs"] = max((k // per_epoch + 1 for k in kept), default=0)
        metrics["policy/skipped_minibatches"] = len(bad) - len(kept)
        return metrics

    def layout(
        self, rollout: Rollout, advantages: torch.Tensor, returns: torch.Tensor
    ) -> tuple[list[int], ResponseTokens | None]:
        """Each rollout row's real response length, read once (a micro-batch runs up to its
        own longest response, not the batch's: the padding after it changes no real
        position), and when packed, every row's real tokens with their targets."""
        if self.packed:
            tokens = ResponseTokens.of(rollout, advantages, returns)
            return tokens.lengths, tokens
        return rollout.mask.sum(1).long().tolist(), None

    def gradients(
        self,
        rollout: Rollout,
        rows: torch.Tensor,
        advantages: torch.Tensor,
        returns: torch.Tensor,
        lengths: list[int] | None = None,
        tokens: ResponseTokens | None = None,
    ) -> Statistics:
        """Fill `.grad` with the gradient of the PPO loss over `rows`; return its statistics
        (on the device: nothing is read back here).

        Gradient accumulation over `micro_batch_size` rows at a time: each micro-batch's
        loss is a mean over its own tokens, weighted by its share of the rows' tokens, so
        the summed gradient (and every statistic) equals that of all rows in one pass.
        Each micro-batch runs up to its own longest response (`lengths`, per rollout row).
        `lengths` and `tokens` are the rollout's `layout()` (built here when not given).
        """
        if lengths is None or self.packed and tokens is None:  # never half a layout
            lengths, tokens = self.layout(rollout, advantages, returns)
        drop_gradients(itertools.chain(*self.groups))
        size = self.cfg.micro_batch_size
        parts = rows.split(size) if size and size < len(rows) else (rows,)
        # one part (the default): weight 1, no token count needed
        token_count = float(sum(lengths[row] for row in rows.tolist())) if len(parts) > 1 else 0.0
        total = None  # the statistics stacked, one accumulation per micro-batch
        for j in parts:
            micro_rows = j.tolist()
            weight = (float(sum(lengths[row] for row in micro_rows)) / token_count
                      if token_count else 1.0)
            longest = max(lengths[row] for row in micro_rows)
            loss, stats = self.loss(minibatch_of(rollout, advantages, returns, j, longest, tokens))
            self.scaler.scale(loss if weight == 1.0 else loss * weight).backward()
            values = Statistics.of(stats).values
            weighted = values if weight == 1.0 else weight * values  # one micro-batch: as is
            total = weighted if total is None else total + weighted
        return Statistics(tuple(stats), total)

    def loss(self, mb: Minibatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """PPO loss of some rollout rows (means over their tokens), and its statistics
        (detached 0-dim tensors)."""
        cfg = self.cfg
        with autocast(self.device, self.dtype):
            logits, values = self.forward(
                mb.input_ids, mb.attention_mask, mb.position_ids, mb.response_length
            )
        response, mask = mb.response, mb.mask
        old_logprobs, old_values, advantages, returns = (
            mb.logprobs, mb.values, mb.advantages, mb.returns
        )
        logprobs, token_entropy = losses.logprobs_and_entropy(
            logits, response, temperature=cfg.temperature, entropy_grad=cfg.ent_coef != 0
        )
        pg_loss, pg = losses.policy_loss(
            logprobs, old_logprobs, advantages, mask, clip_eps=cfg.clip_eps
        )
        vf_loss, vf = losses.value_loss(
            values, old_values, returns, mask, value_clip_eps=cfg.value_clip_eps
        )
        entropy = losses.masked_mean(token_entropy, mask)
        loss = pg_loss + cfg.vf_coef * vf_loss
        if cfg.ent_coef != 0:  # else the entropy is a statistic only, off the graph
            loss = loss - cfg.ent_coef * entropy
        stats = {
            "policy/approx_kl": pg["approx_kl"],
            "policy/clipfrac": pg["clipfrac"],
            "policy/ratio": pg["ratio"],
            "policy/entropy": entropy.detach(),
            "value/clipfrac": vf["clipfrac"],
            "loss/policy": pg_loss.detach(),
            "loss/value": vf_loss.detach(),
            "loss/entropy": -entropy.detach(),
            "loss/total": loss.detach(),
        }
        return loss, stats


def drop_gradients(parameters: Iterable[torch.nn.Parameter]) -> None:
    """What `optimizer.zero_grad(set_to_none=True)` does: every gradient released, so the
    next backward writes fresh ones; without first reading each `.grad` as that loop
    does, which wraps every gradient tensor in a Python object (0.05 against 0.2 ms per
    minibatch for the ~100 parameters of two 1M-parameter GPT-2 trunks)."""
    for parameter in parameters:
        parameter.grad = None


@dataclass(frozen=True, eq=False)  # a Mapping: equal when its items are
class Statistics(Mapping[str, torch.Tensor]):
    """A minibatch's statistics, by name: one (k,) float64 tensor on the device, so that
    every minibatch's are read back together (`read`) and none is split apart before."""

    names: tuple[str, ...]
    values: torch.Tensor  # (k,) float64: as the Python floats they once were

    @classmethod
    def of(cls, stats: dict[str, torch.Tensor]) -> Statistics:
        """Stack `Replay.loss`'s 0-dim statistics."""
        return cls(tuple(stats), torch.stack(list(stats.values())).double())

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.values[self.names.index(name)]

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)


def read(stats: list[Statistics]) -> dict[str, list[float]]:
    """Every minibatch's statistics as Python floats, in one read from the device."""
    if not stats:
        return {}
    table = torch.stack([minibatch.values for minibatch in stats]).T.tolist()
    return dict(zip(stats[0].names, table, strict=True))


def lr_factor(update: int, iterations: int, *, decay: bool) -> float:
    """Multiplier of `lr` at update 0..iterations-1: 1 throughout, or linear from 1 to 0."""
    if not decay or iterations == 1:
        return 1.0
    return 1.0 - update / (iterations - 1)
