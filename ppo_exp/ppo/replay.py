"""Step 5 of a PPO iteration: `ppo_epochs` passes over shuffled minibatches of a rollout.

`Replay` owns what the update changes: the optimiser (AdamW, the critic in a parameter
group of its own), the float16 loss scaler and the learning-rate schedule. Each minibatch
minimises policy loss + vf_coef * value loss - ent_coef * entropy, with its gradients
clipped per group and non-finite steps skipped or stopped on.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ppo_exp.config import PPOConfig
from ppo_exp.ppo import control, guards, losses
from ppo_exp.ppo.hardware import autocast
from ppo_exp.ppo.models import ActorCritic
from ppo_exp.ppo.rollout import Minibatch, Rollout, minibatch_of


class Replay:
    """The update of a rollout: `update()` runs the replay epochs and steps the optimiser."""

    def __init__(
        self, cfg: PPOConfig, model: ActorCritic, *, device: torch.device, dtype: torch.dtype
    ):
        self.cfg, self.model, self.device, self.dtype = cfg, model, device, dtype
        # The update's forward: the real tokens only, packed (the default); or the padded
        # rows, eager or compiled (same parameters; dynamic=True: minibatches trimmed to
        # their longest response change shape without recompiling).
        if cfg.pack_minibatches:
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
        # Real response lengths, read once: each micro-batch runs up to its own longest
        # response, not the batch's (the padding after it changes no real position).
        lengths = rollout.mask.sum(1).long().tolist()
        stats: dict[str, list[torch.Tensor]] = {}  # read from the device once, at the end
        epochs_run = 0
        self.model.update_mode(True)
        stopped, skipped = False, 0
        for epoch in range(cfg.ppo_epochs):
            order = torch.randperm(batch)
            for start in range(0, batch, minibatch):
                i = order[start : start + minibatch]
                minibatch_stats = self.gradients(rollout, i, advantages, returns, lengths)
                # CleanRL's early stop, without its lag: this minibatch's approx-KL is
                # measured after every earlier step, so its own step is skipped.
                if control.stop_replay(minibatch_stats["policy/approx_kl"], cfg.target_kl):
                    stopped = True
                    break
                if self.nonfinite_step(minibatch_stats["loss/total"], iteration):
                    skipped += 1
                    continue
                self.scaler.step(self.optimizer)
                self.scaler.update()
                epochs_run = epoch + 1

                for name, value in minibatch_stats.items():
                    stats.setdefault(name, []).append(value)
            if stopped:
                break
        self.model.update_mode(False)
        metrics = {name: float(np.mean(values)) for name, values in read(stats).items()}
        metrics["policy/epochs"] = epochs_run
        metrics["policy/skipped_minibatches"] = skipped
        return metrics

    def nonfinite_step(self, loss: torch.Tensor, iteration: int) -> bool:
        """Clip the policy's and the critic's gradients, each on its own; True when the loss
        or a gradient norm is not finite and `on_nonfinite=skip` (stop: raise)."""
        cfg = self.cfg
        self.scaler.unscale_(self.optimizer)
        norms = {  # an infinite max_norm measures without clipping
            f"gradient norm of the {name}": torch.nn.utils.clip_grad_norm_(
                group, cfg.max_grad_norm or math.inf
            )
            for name, group in zip(("policy", "critic"), self.groups, strict=True)
        }
        if self.scaler.is_enabled():  # float16: the scaler skips inf steps itself
            return False
        bad = guards.first_nonfinite({"loss/total": loss, **norms})  # one read
        if bad and cfg.on_nonfinite == "stop":
            raise guards.nonfinite_fault(
                iteration, bad, where="update",
                hint="on_nonfinite=skip skips such minibatches; lower lr or set max_grad_norm",
            )
        return bad is not None

    def gradients(
        self,
        rollout: Rollout,
        rows: torch.Tensor,
        advantages: torch.Tensor,
        returns: torch.Tensor,
        lengths: list[int] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Fill `.grad` with the gradient of the PPO loss over `rows`; return its statistics
        (0-dim float64 tensors on the device: nothing is read back here).

        Gradient accumulation over `micro_batch_size` rows at a time: each micro-batch's
        loss is a mean over its own tokens, weighted by its share of the rows' tokens, so
        the summed gradient (and every statistic) equals that of all rows in one pass.
        Each micro-batch runs up to its own longest response (`lengths`, per rollout row).
        """
        if lengths is None:
            lengths = rollout.mask.sum(1).long().tolist()
        tokens = float(sum(lengths[row] for row in rows.tolist()))
        self.optimizer.zero_grad(set_to_none=True)
        total = None  # the statistics stacked, one accumulation per micro-batch
        for j in rows.split(self.cfg.micro_batch_size or len(rows)):
            micro_rows = j.tolist()
            weight = float(sum(lengths[row] for row in micro_rows)) / tokens if tokens else 1.0
            longest = max(lengths[row] for row in micro_rows)
            loss, micro = self.loss(minibatch_of(rollout, advantages, returns, j, longest))
            self.scaler.scale(loss * weight).backward()
            # float64: as the Python floats they once were
            weighted = weight * torch.stack(list(micro.values())).double()
            total = weighted if total is None else total + weighted
        return dict(zip(micro, total.unbind(), strict=True))

    def loss(self, mb: Minibatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """PPO loss of some rollout rows (means over their tokens), and its statistics
        (detached 0-dim tensors)."""
        cfg = self.cfg
        with autocast(self.device, self.dtype):
            logits, values = self.forward(
                mb.input_ids, mb.attention_mask, mb.position_ids, mb.response.shape[1]
            )
        response, mask = mb.response, mb.mask
        old_logprobs, old_values, advantages, returns = (
            mb.logprobs, mb.values, mb.advantages, mb.returns
        )
        if logits.dim() == 2:  # packed: (n, V) logits and (n,) values at the real tokens
            real = mask.bool()
            response, old_logprobs, old_values, advantages, returns = (
                t[real] for t in (response, old_logprobs, old_values, advantages, returns)
            )
            mask = None  # every one of the n positions is real
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


def read(stats: dict[str, list[torch.Tensor]]) -> dict[str, list[float]]:
    """Every minibatch's statistics as Python floats, in one read from the device."""
    if not stats:
        return {}
    table = torch.stack([torch.stack(values) for values in stats.values()]).tolist()
    return dict(zip(stats, table, strict=True))


def lr_factor(update: int, iterations: int, *, decay: bool) -> float:
    """Multiplier of `lr` at update 0..iterations-1: 1 throughout, or linear from 1 to 0."""
    if not decay or iterations == 1:
        return 1.0
    return 1.0 - update / (iterations - 1)
