"""The PPO trainer for language models. One iteration, in the order of the algorithm:

1. rollout: sample responses to a batch of prompts, truncate after the stop token;
2. score: the reward model scores each response;
3. KL penalty: per-token rewards r_t = -kl_coef * KL_t, plus the score on the last real token;
4. GAE: advantages and returns, backwards from the last token;
5. replay: `ppo_epochs` passes over shuffled minibatches, each minimising
   policy loss + vf_coef * value loss - ent_coef * entropy;
6. metrics: logged to every tracker, plus a held-out eval every `eval_every` iterations.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from typing import NamedTuple, Protocol

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm
from transformers import set_seed

from ppo_exp import model_checks
from ppo_exp.config import PPOConfig
from ppo_exp.data import Prompt, load_prompts
from ppo_exp.ppo import control, guards, losses
from ppo_exp.ppo.gae import compute_gae
from ppo_exp.ppo.hardware import autocast, resolve_device, resolve_dtype
from ppo_exp.ppo.loading import build_models, policy_path
from ppo_exp.ppo.models import position_ids_for
from ppo_exp.task.base_model import load_tokenizer
from ppo_exp.task.rewards import Scorer, build_reward, chat_tokenizer, full_texts

log = logging.getLogger("ppo_exp")

SAMPLES_LOGGED = 16  # rows of the sample-generations table


class Tracker(Protocol):
    """Receives what the trainer measures: MLflow, the console, an Optuna pruner..."""

    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...

    def log_samples(self, samples: pd.DataFrame, step: int) -> None: ...


class Rollout(NamedTuple):
    """One batch of sampled responses. B = batch, L = prompt + response, T = response.

    Everything PPO reads during the replay epochs is computed once, under
    `torch.inference_mode`, then cloned outside it into normal tensors (a clone made
    inside would still be an inference tensor).
    """

    input_ids: torch.Tensor  # (B, L) left-padded prompt + right-padded response
    attention_mask: torch.Tensor  # (B, L)
    position_ids: torch.Tensor  # (B, L)
    response: torch.Tensor  # (B, T) token ids, padding after the stop token
    mask: torch.Tensor  # (B, T) 1.0 up to and including the stop token
    logprobs: torch.Tensor  # (B, T) policy log-probs at sampling time, at temperature
    ref_logprobs: torch.Tensor  # (B, T) frozen reference model, same temperature
    values: torch.Tensor  # (B, T) critic's values at sampling time
    entropy: torch.Tensor  # (B, T) policy entropy at sampling time
    scores: torch.Tensor  # (B,) reward-model scores, after the missing-stop penalty
    raw_scores: torch.Tensor  # (B,) the reward model's own scores, before that penalty
    has_eos: torch.Tensor  # (B,) bool, response ended with the stop token
    texts: list[str]  # decoded responses


class PPOTrainer:
    """Holds the models, the optimiser and the KL coefficient; `train()` runs the loop."""

    def __init__(self, cfg: PPOConfig):
        self.cfg = cfg
        set_seed(cfg.seed)  # python, numpy and torch
        model_checks.check(cfg)  # paths, positions, devices, LoRA targets: before any weights
        self.device = resolve_device(cfg.model.device)
        self.dtype = resolve_dtype(cfg.model.dtype, self.device)
        self.tokenizer = load_tokenizer(policy_path(cfg))
        self.prompts = load_prompts(
            cfg.data, self.tokenizer, seed=cfg.seed, eval_prompts=cfg.eval_prompts
        )
        model_checks.check_fits(cfg, self.prompts.longest)
        self.train_prompts, self.eval_prompts = self.prompts.train, self.prompts.eval
        models = build_models(cfg, self.tokenizer, device=self.device, dtype=self.dtype)
        self.model, self.ref = models.actor_critic, models.reference
        self.stop_ids = torch.tensor(models.stop_token_ids, device=self.device)
        # Dropout stays off (eval mode) throughout, so sampling-time and training-time
        # log-probs agree and the first ratio is exactly 1.
        # All of it, or LoRA adapters + value head; the critic in a parameter group of its
        # own, with its own step size (vf_coef * vf_lr) and gradient clipping. fused: one
        # kernel steps every parameter (not a loop over them), the same update up to
        # floating-point order.
        self.groups = control.param_groups(self.model)
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
        self.scaler = torch.amp.GradScaler(
            self.device.type, enabled=self.dtype == torch.float16
        )
        # lr_decay: linear from lr at the first update to 0 at the last (CleanRL's anneal_lr)
        self.lr_schedule = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: lr_factor(step, cfg.iterations, decay=cfg.lr_decay)
        )
        self.scorer: Scorer = build_reward(cfg.reward, device=self.device, dtype=self.dtype)
        self.reward_chat = chat_tokenizer(cfg.reward)  # its template formats reward.text=full
        # Measured at evals only, never trained on (the gold scorer of a learned proxy).
        self.gold: Scorer | None = None
        if cfg.reward.gold is not None:
            self.gold = build_reward(cfg.reward.gold, device=self.device, dtype=self.dtype)
            self.gold_chat = chat_tokenizer(cfg.reward.gold)
        self.kl_coef = cfg.kl_coef
        self.iteration = 0  # the PPO iteration running, named by a numeric fault
        self.divergence_streak = 0  # iterations in a row with approx-KL beyond its bound
        self.prompt_rng = torch.Generator().manual_seed(cfg.seed)

    # -- 1-2. rollout and score --------------------------------------------------------

    def rollout(self, prompts: list[Prompt]) -> Rollout:
        """Sample and score responses to `prompts`; tensors autograd may read."""
        sampled = self.sample(prompts)
        return Rollout(*(x.clone() if torch.is_tensor(x) else x for x in sampled))

    @torch.inference_mode()
    def sample(self, prompts: list[Prompt]) -> Rollout:
        cfg, tok = self.cfg, self.tokenizer
        prompt_texts = [p.text for p in prompts]  # a chat template holds its special tokens
        enc = tok(
            prompt_texts, return_tensors="pt", padding=True,
            add_special_tokens=not self.prompts.templated,
        ).to(self.device)
        prompt_len = enc.input_ids.shape[1]
        # Plain sampling at `temperature`, stopping at any stop token: the policy's
        # generation_config is ours alone (loading.sampling_config), never the checkpoint's.
        with autocast(self.device, self.dtype):
            input_ids = self.model.policy.generate(**enc)  # (B, L)
        response = input_ids[:, prompt_len:]  # (B, T)
        mask, has_eos = truncate_after_stop(response, self.stop_ids)
        response = torch.where(mask.bool(), response, tok.pad_token_id)
        input_ids = torch.cat([input_ids[:, :prompt_len], response], dim=1)
        attention_mask = torch.cat([enc.attention_mask, mask.long()], dim=1)
        position_ids = position_ids_for(attention_mask)
        T = response.shape[1]

        # Log-probs are recomputed with the same full forward pass the update uses (rather
        # than taken from generate's KV-cached scores), so the first minibatch's ratio is
        # exactly 1 and not a numerical artefact. Logits are divided by the sampling
        # temperature, as in the N-implementation-details paper. `rollout_micro_batch`
        # rows at a time, so only that many (T, V) logits tensors are alive at once.
        chunks = []
        for rows in torch.arange(len(prompts)).split(cfg.rollout_micro_batch or len(prompts)):
            inputs = (input_ids[rows], attention_mask[rows], position_ids[rows], T)
            with autocast(self.device, self.dtype):
                logits, values = self.model(*inputs)
            logprobs, entropy = losses.logprobs_and_entropy(
                logits, response[rows], temperature=cfg.temperature, entropy_grad=False
            )
            del logits  # (b, T, V): freed before the reference's
            with autocast(self.device, self.dtype):
                ref_logits = self.ref.logits(*inputs)
            ref_logprobs = losses.logprobs_from_logits(
                ref_logits / cfg.temperature, response[rows]
            )
            chunks.append((logprobs, ref_logprobs, values, entropy))
        logprobs, ref_logprobs, values, entropy = (
            torch.cat(parts) for parts in zip(*chunks, strict=True)
        )

        texts = tok.batch_decode(response, skip_special_tokens=True)
        scored = scored_texts(prompts, texts, text=cfg.reward.text, chat=self.reward_chat)
        raw_scores = self.scorer(scored).to(self.device, torch.float32)
        scores = raw_scores
        if cfg.missing_eos_penalty is not None:
            scores = raw_scores - cfg.missing_eos_penalty * (~has_eos).float()

        return Rollout(
            input_ids, attention_mask, position_ids, response, mask, logprobs, ref_logprobs,
            values * mask, entropy, scores, raw_scores, has_eos, texts,
        )

    # -- 3-4. KL penalty and GAE -------------------------------------------------------

    def token_kl(self, rollout: Rollout) -> torch.Tensor:
        """KL to the reference per response token (B, T), 0 after the stop token."""
        kl = losses.kl_penalty(rollout.logprobs, rollout.ref_logprobs, self.cfg.kl_estimator)
        return kl * rollout.mask

    def token_rewards(self, rollout: Rollout) -> torch.Tensor:
        """Per-token rewards (B, T): the KL penalty on every token, the score on the last."""
        cfg = self.cfg
        rewards = -self.kl_coef * self.token_kl(rollout)
        # The score goes on the last real token (the stop token), not on the padding
        # slot after it (TRL issues 1893, 3750).
        last = (rollout.mask.sum(1).long() - 1).clamp(min=0)  # (B,)
        rewards[torch.arange(len(last), device=last.device), last] += rollout.scores
        if cfg.whiten_rewards:
            rewards = losses.masked_whiten(rewards, rollout.mask, shift_mean=False)
        return rewards

    def advantages(
        self, rollout: Rollout, rewards: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """GAE advantages (whitened if set) and returns, (B, T) each."""
        cfg = self.cfg
        advantages, returns = compute_gae(
            rewards, rollout.values, rollout.mask, gamma=cfg.gamma, lam=cfg.lam
        )
        if cfg.whiten_advantages:
            advantages = losses.masked_whiten(advantages, rollout.mask)
        return advantages, returns

    # -- 5. replay epochs --------------------------------------------------------------

    def update(
        self, rollout: Rollout, advantages: torch.Tensor, returns: torch.Tensor
    ) -> dict[str, float]:
        cfg = self.cfg
        batch = len(rollout.scores)
        minibatch = batch // cfg.num_minibatches
        # Real response lengths, read once: each micro-batch runs up to its own longest
        # response, not the batch's (the padding after it changes no real position).
        lengths = rollout.mask.sum(1).long().tolist()
        stats: dict[str, list[float]] = {}
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
                if self.nonfinite_step(minibatch_stats["loss/total"]):
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
        metrics = {name: float(np.mean(values)) for name, values in stats.items()}
        metrics["policy/epochs"] = epochs_run
        metrics["policy/skipped_minibatches"] = skipped
        return metrics

    def nonfinite_step(self, loss: float) -> bool:
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
        bad = guards.first_nonfinite({"loss/total": loss, **norms})
        if bad and cfg.on_nonfinite == "stop":
            raise guards.nonfinite_fault(
                self.iteration, bad, where="update",
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
    ) -> dict[str, float]:
        """Fill `.grad` with the gradient of the PPO loss over `rows`; return its statistics.

        Gradient accumulation over `micro_batch_size` rows at a time: each micro-batch's
        loss is a mean over its own tokens, weighted by its share of the rows' tokens, so
        the summed gradient (and every statistic) equals that of all rows in one pass.
        Each micro-batch runs up to its own longest response (`lengths`, per rollout row).
        """
        if lengths is None:
            lengths = rollout.mask.sum(1).long().tolist()
        tokens = float(sum(lengths[row] for row in rows.tolist()))
        self.optimizer.zero_grad(set_to_none=True)
        stats: dict[str, float] = {}
        for j in rows.split(self.cfg.micro_batch_size or len(rows)):
            micro_rows = j.tolist()
            weight = float(sum(lengths[row] for row in micro_rows)) / tokens if tokens else 1.0
            longest = max(lengths[row] for row in micro_rows)
            loss, micro = self.loss(minibatch_of(rollout, advantages, returns, j, longest))
            self.scaler.scale(loss * weight).backward()
            for name, value in micro.items():
                stats[name] = stats.get(name, 0.0) + weight * value
        return stats

    def loss(self, mb: Minibatch) -> tuple[torch.Tensor, dict[str, float]]:
        """PPO loss of some rollout rows (means over their tokens), and its statistics."""
        cfg = self.cfg
        with autocast(self.device, self.dtype):
            logits, values = self.model(
                mb.input_ids, mb.attention_mask, mb.position_ids, mb.response.shape[1]
            )
        logprobs, token_entropy = losses.logprobs_and_entropy(
            logits, mb.response, temperature=cfg.temperature, entropy_grad=cfg.ent_coef != 0
        )
        pg_loss, pg = losses.policy_loss(
            logprobs, mb.logprobs, mb.advantages, mb.mask, clip_eps=cfg.clip_eps
        )
        vf_loss, vf = losses.value_loss(
            values, mb.values, mb.returns, mb.mask, value_clip_eps=cfg.value_clip_eps
        )
        entropy = losses.masked_mean(token_entropy, mb.mask)
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
        return loss, {name: float(value) for name, value in stats.items()}

    def check_finite(
        self, rollout: Rollout, advantages: torch.Tensor, returns: torch.Tensor
    ) -> None:
        """Stop on a NaN or infinity in the rollout or its GAE, where it first appears."""
        for where, quantities in (
            ("rollout", {"reward scores": rollout.scores, "values": rollout.values,
                         "log-probs": rollout.logprobs, "reference log-probs":
                         rollout.ref_logprobs}),
            ("GAE", {"advantages": advantages, "returns": returns}),
        ):
            if bad := guards.first_nonfinite(quantities):
                raise guards.nonfinite_fault(self.iteration, bad, where=where)

    def update_kl_coef(self, kl_per_response: float) -> None:
        """Adaptive KL controller (Ziegler et al. 2019): steer the KL towards `kl_target`."""
        cfg = self.cfg
        if cfg.kl_target is None:
            return
        horizon = control.kl_horizon(
            cfg.kl_horizon, iterations=cfg.iterations, batch_size=cfg.batch_size
        )
        self.kl_coef = control.adaptive_kl_coef(
            self.kl_coef, kl_per_response,
            target=cfg.kl_target, batch_size=cfg.batch_size, horizon=horizon,
        )

    # -- evaluation ---------------------------------------------------------------------

    def evaluate(self) -> dict[str, float]:
        """Held-out prompts, sampled with a fixed seed so evals are comparable over time."""
        with torch.random.fork_rng():
            torch.manual_seed(self.cfg.seed + 1_000_003)
            rollout = self.rollout(self.eval_prompts)
        kl = self.token_kl(rollout)
        metrics = {
            "eval/reward_mean": float(rollout.raw_scores.mean()),  # the reward model's own
            "eval/reward_std": float(rollout.raw_scores.std()),
            "eval/penalized_reward_mean": float(rollout.scores.mean()),  # missing-stop penalty
            "eval/kl": float(kl.sum(1).mean()),
            "eval/response_length": float(rollout.mask.sum(1).mean()),
        }
        metrics["eval/score"] = metrics["eval/reward_mean"] - self.cfg.kl_coef * metrics["eval/kl"]
        if self.gold is not None:  # the same held-out responses, scored by the gold scorer
            text = self.cfg.reward.gold.text
            texts = scored_texts(self.eval_prompts, rollout.texts, text=text, chat=self.gold_chat)
            gold = self.gold(texts).to(torch.float32)
            metrics["eval/gold_mean"] = float(gold.mean())
            metrics["eval/gold_std"] = float(gold.std())
        return metrics

    def data_metrics(self) -> dict[str, float]:
        """How many prompts the run has, and how many the length filter dropped."""
        return {
            "data/prompts_train": len({p.text for p in self.train_prompts}),
            "data/prompts_eval": len({p.text for p in self.eval_prompts}),
            "data/prompts_dropped": self.prompts.dropped,
            "data/prompt_tokens_max": self.prompts.longest,
        }

    def samples_table(self, prompts: list[Prompt], rollout: Rollout) -> pd.DataFrame:
        n = min(SAMPLES_LOGGED, len(prompts))
        return pd.DataFrame(
            {
                "prompt": [p.text for p in prompts[:n]],  # as the model saw it
                "response": rollout.texts[:n],
                "score": rollout.scores[:n].tolist(),
            }
        )

    # -- the loop -------------------------------------------------------------------------

    def train(self, trackers: Sequence[Tracker] = ()) -> dict[str, float]:
        """Run `iterations` PPO iterations; return the last value of every metric."""
        cfg = self.cfg
        last: dict[str, float] = {}

        def emit(metrics: dict[str, float], step: int) -> None:
            last.update(metrics)
            for tracker in trackers:
                tracker.log_metrics(metrics, step)

        eval_metrics = self.evaluate()  # step 0: the base model
        emit({**eval_metrics, **self.data_metrics()}, 0)
        eval_scores: list[float] = []  # held-out score at each eval after step 0
        eval_rewards: list[float] = []  # and held-out reward
        bar = tqdm(range(1, cfg.iterations + 1), desc="PPO", unit="it", dynamic_ncols=True)
        for it in bar:
            t0 = time.perf_counter()
            picks = torch.randint(
                len(self.train_prompts), (cfg.batch_size,), generator=self.prompt_rng
            )
            prompts = [self.train_prompts[i] for i in picks]
            self.iteration = it
            rollout = self.rollout(prompts)  # 1-2
            rewards = self.token_rewards(rollout)  # 3
            advantages, returns = self.advantages(rollout, rewards)  # 4
            self.check_finite(rollout, advantages, returns)
            t1 = time.perf_counter()
            update_metrics = self.update(rollout, advantages, returns)  # 5
            t2 = time.perf_counter()

            kl_per_response = float(self.token_kl(rollout).sum(1).mean())
            metrics = {
                "rollout/reward_mean": float(rollout.raw_scores.mean()),
                "rollout/reward_std": float(rollout.raw_scores.std()),
                "rollout/penalized_reward_mean": float(rollout.scores.mean()),
                "rollout/kl": kl_per_response,
                "rollout/kl_coef": self.kl_coef,
                "rollout/entropy": float(losses.masked_mean(rollout.entropy, rollout.mask)),
                "rollout/response_length": float(rollout.mask.sum(1).mean()),
                "rollout/eos_rate": float(rollout.has_eos.float().mean()),
                "rollout/rlhf_reward": float(rewards.sum(1).mean()),
                "value/explained_var": losses.explained_variance(
                    rollout.values, returns, rollout.mask
                ),
                "policy/lr": self.optimizer.param_groups[0]["lr"],
                **update_metrics,
                "perf/rollout_s": t1 - t0,
                "perf/update_s": t2 - t1,
                "perf/tokens_per_s": float(rollout.mask.sum()) / (t2 - t0),
            }
            self.update_kl_coef(kl_per_response)
            approx_kl = update_metrics.get("policy/approx_kl", 0.0)
            self.divergence_streak = guards.divergence_streak(
                self.divergence_streak, approx_kl, cfg.max_approx_kl
            )
            guards.check_divergence(
                it, self.divergence_streak, approx_kl, bound=cfg.max_approx_kl,
                patience=cfg.divergence_patience, fail=cfg.on_divergence == "fail",
            )
            self.lr_schedule.step()
            if it == cfg.iterations or (cfg.eval_every and it % cfg.eval_every == 0):
                eval_metrics = self.evaluate()
                eval_scores.append(eval_metrics["eval/score"])
                eval_rewards.append(eval_metrics["eval/reward_mean"])
                # Areas under the held-out learning curves: they credit getting there
                # early, so settings still differ when every run ends up saturated.
                eval_metrics["eval/score_auc"] = float(np.mean(eval_scores))
                eval_metrics["eval/reward_auc"] = float(np.mean(eval_rewards))
                metrics.update(eval_metrics)
            emit(metrics, it)
            if cfg.sample_every and (it % cfg.sample_every == 0 or it == cfg.iterations):
                for tracker in trackers:
                    tracker.log_samples(self.samples_table(prompts, rollout), it)
            bar.set_postfix(
                reward=f"{metrics['rollout/reward_mean']:.3f}",
                kl=f"{kl_per_response:.2f}",
                eval=f"{last['eval/reward_mean']:.3f}",
            )
        bar.close()
        return last


def train(cfg: PPOConfig, trackers: Sequence[Tracker] = ()) -> dict[str, float]:
    """Build the models for `cfg` and run the whole PPO training; return the final metrics."""
    return PPOTrainer(cfg).train(trackers)


def lr_factor(update: int, iterations: int, *, decay: bool) -> float:
    """Multiplier of `lr` at update 0..iterations-1: 1 throughout, or linear from 1 to 0."""
    if not decay or iterations == 1:
        return 1.0
    return 1.0 - update / (iterations - 1)


class Minibatch(NamedTuple):
    """Rows `i` of a rollout, cut to `length` response tokens. T = length, L = prompt + T."""

    input_ids: torch.Tensor  # (b, L)
    attention_mask: torch.Tensor  # (b, L)
    position_ids: torch.Tensor  # (b, L)
    response: torch.Tensor  # (b, T)
    mask: torch.Tensor  # (b, T)
    logprobs: torch.Tensor  # (b, T) at sampling time
    values: torch.Tensor  # (b, T) at sampling time
    advantages: torch.Tensor  # (b, T)
    returns: torch.Tensor  # (b, T)


def minibatch_of(
    rollout: Rollout, advantages: torch.Tensor, returns: torch.Tensor, i: torch.Tensor, length: int
) -> Minibatch:
    """The rows `i` of the rollout, without the response slots after `length`.

    Causal attention means no real position reads a later one, so dropping padding
    columns that every row of the minibatch has leaves every real position's output as
    it was (up to floating-point order); only the amount of work changes.
    """
    cut = rollout.response.shape[1] - length  # padding columns common to all rows
    sequence = slice(None, rollout.input_ids.shape[1] - cut)
    inputs = (rollout.input_ids, rollout.attention_mask, rollout.position_ids)
    return Minibatch(
        *(t[i, sequence] for t in inputs),
        *(t[i, :length] for t in (rollout.response, rollout.mask, rollout.logprobs,
                                  rollout.values, advantages, returns)),
    )
def scored_texts(prompts: list[Prompt], responses: list[str], *, text: str, chat) -> list[str]:
    """What a scorer reads: the responses alone (text="response") or prompt + response,
    through the reward tokenizer's chat template `chat` where it has one (`full_texts`)."""
    if text == "response":
        return responses
    return full_texts([p.text for p in prompts], [p.chat for p in prompts], responses, chat)


def truncate_after_stop(
    response: torch.Tensor, stop_token_ids: torch.Tensor | int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask (B, T) of 1.0 up to and including each row's first stop token; and (B,) has-stop.

    `stop_token_ids`: one id, or a 1-D tensor of ids any of which ends a response.
    """
    is_stop = torch.isin(response, torch.as_tensor(stop_token_ids, device=response.device))
    has_stop = is_stop.any(1)
    # Stops seen strictly before each position: 0 means the token is still in the response.
    stops_before = is_stop.long().cumsum(1) - is_stop.long()
    return (stops_before == 0).float(), has_stop
