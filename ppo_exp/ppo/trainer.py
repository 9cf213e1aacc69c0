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
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from ppo_exp import model_checks
from ppo_exp.config import PPOConfig
from ppo_exp.data import Prompt, load_prompts
from ppo_exp.ppo import checkpoint, control, guards, losses
from ppo_exp.ppo.gae import compute_gae
from ppo_exp.ppo.hardware import resolve_device, resolve_dtype
from ppo_exp.ppo.loading import build_models, policy_path
from ppo_exp.ppo.replay import Replay
from ppo_exp.ppo.rollout import (
    Rollout,
    Sampler,
    reward_inputs,
    rollout_statistics,
    samples_table,
)
from ppo_exp.task.base_model import load_tokenizer
from ppo_exp.task.rewards import Scorer, TokenScorer, build_reward, chat_tokenizer

log = logging.getLogger("ppo_exp")

SAMPLES_LOGGED = 16  # rows of the sample-generations table


class Tracker(Protocol):
    """Receives what the trainer measures: MLflow, the console, an Optuna pruner..."""

    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...

    def log_samples(self, samples: pd.DataFrame, step: int) -> None: ...


class PPOTrainer:
    """Holds the models, the sampler (ppo/rollout.py), the replay with its optimiser
    (ppo/replay.py) and the KL coefficient; `train()` runs the loop.

    With a `job_dir`, checkpoints go to its `checkpoints/` every `checkpoint_every`
    iterations and after the last, carrying `meta` (ppo/checkpoint.py); `restore` puts a
    checkpoint back, and `train()` then goes on after its iteration.
    """

    def __init__(
        self, cfg: PPOConfig, *, job_dir: Path | None = None, meta: dict | None = None
    ):
        self.cfg, self.job_dir, self.meta = cfg, job_dir, meta or {}
        seed_everything(cfg.seed)
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
        # log-probs agree and the first ratio is 1 (to float rounding with packed rows).
        self.replay = Replay(cfg, self.model, device=self.device, dtype=self.dtype)
        self.sampler = Sampler(
            cfg, self.model, self.ref, self.tokenizer, self.stop_ids, models.sampling,
            scorer=build_reward(cfg.reward, device=self.device, dtype=self.dtype),
            reward_chat=chat_tokenizer(cfg.reward),  # its template formats reward.text=full
            templated=self.prompts.templated, device=self.device, dtype=self.dtype,
        )
        # Measured at evals only, never trained on (the gold scorer of a learned proxy).
        self.gold: Scorer | TokenScorer | None = None
        if cfg.reward.gold is not None:
            self.gold = build_reward(cfg.reward.gold, device=self.device, dtype=self.dtype)
            self.gold_chat = chat_tokenizer(cfg.reward.gold)
        self.kl_coef = cfg.kl_coef
        self.iteration = 0  # the PPO iteration running, named by a numeric fault
        self.divergence_streak = 0  # iterations in a row with approx-KL beyond its bound
        self.prompt_rng = torch.Generator().manual_seed(cfg.seed)
        self.start = 0  # the last iteration done: 0, or a restored checkpoint's
        self.last: dict[str, float] = {}  # the last value of every metric logged
        # held-out score and reward at each eval after step 0 (learning-curve areas)
        self.eval_history: dict[str, list[float]] = {"eval/score": [], "eval/reward_mean": []}

    # -- checkpoints (ppo/checkpoint.py) ------------------------------------------------

    def restore(self, folder: Path) -> None:
        """Load a checkpoint of this run: the next `train()` goes on after its iteration."""
        checkpoint.restore_trainer(self, folder)
        log.info("resumed from %s: iteration %d of %d", folder, self.start, self.cfg.iterations)

    # -- 1-2. rollout and score --------------------------------------------------------

    def rollout(self, prompts: list[Prompt]) -> Rollout:
        """Sample and score responses to `prompts`; tensors autograd may read."""
        return self.sampler(prompts)

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
        """The replay epochs over `rollout` (ppo/replay.py); their statistics."""
        return self.replay.update(rollout, advantages, returns, iteration=self.iteration)

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
            scored = reward_inputs(
                self.eval_prompts, rollout.texts, rollout.input_ids, rollout.attention_mask,
                rollout.response.shape[1], reward=self.cfg.reward.gold, chat=self.gold_chat,
            )
            gold = self.gold(*scored).to(torch.float32)
            metrics["eval/gold_mean"] = float(gold.mean())
            metrics["eval/gold_std"] = float(gold.std())
        return metrics

    # -- the loop -------------------------------------------------------------------------

    def train(self, trackers: Sequence[Tracker] = ()) -> dict[str, float]:
        """Run `iterations` PPO iterations; return the last value of every metric."""
        cfg, last, history = self.cfg, self.last, self.eval_history

        def emit(metrics: dict[str, float], step: int) -> None:
            last.update(metrics)
            for tracker in trackers:
                tracker.log_metrics(metrics, step)

        if self.start == 0:
            eval_metrics = self.evaluate()  # step 0: the base model
            emit({**eval_metrics, **self.prompts.metrics()}, 0)
        bar = tqdm(
            range(self.start + 1, cfg.iterations + 1), desc="PPO", unit="it",
            dynamic_ncols=True, initial=self.start, total=cfg.iterations,
        )
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
                **rollout_statistics(rollout, rewards, returns, kl_per_response, self.kl_coef),
                "policy/lr": self.replay.optimizer.param_groups[0]["lr"],
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
            self.replay.lr_schedule.step()
            if it == cfg.iterations or (cfg.eval_every and it % cfg.eval_every == 0):
                eval_metrics = self.evaluate()
                for name, values in history.items():
                    values.append(eval_metrics[name])
                # Areas under the held-out learning curves: they credit getting there
                # early, so settings still differ when every run ends up saturated.
                eval_metrics["eval/score_auc"] = float(np.mean(history["eval/score"]))
                eval_metrics["eval/reward_auc"] = float(np.mean(history["eval/reward_mean"]))
                metrics.update(eval_metrics)
            emit(metrics, it)
            if cfg.sample_every and (it % cfg.sample_every == 0 or it == cfg.iterations):
                for tracker in trackers:
                    tracker.log_samples(samples_table(prompts, rollout, SAMPLES_LOGGED), it)
            if self.job_dir is not None and checkpoint.is_due(
                it, every=cfg.checkpoint_every, iterations=cfg.iterations
            ):
                checkpoint.save_trainer(self, it)
            bar.set_postfix(
                reward=f"{metrics['rollout/reward_mean']:.3f}",
                kl=f"{kl_per_response:.2f}",
                eval=f"{last['eval/reward_mean']:.3f}",
            )
        bar.close()
        return last


def train(
    cfg: PPOConfig,
    trackers: Sequence[Tracker] = (),
    *,
    job_dir: Path | None = None,
    resume: Path | None = None,
    meta: dict | None = None,
) -> dict[str, float]:
    """Build the models for `cfg` and run the whole PPO training; return the final metrics.

    Checkpoints go to `job_dir` (None: none) with `meta` (say, a tracking run id); `resume`
    is a checkpoint of this run to go on from (ppo/checkpoint.py)."""
    trainer = PPOTrainer(cfg, job_dir=job_dir, meta=meta)
    if resume is not None:
        trainer.restore(resume)
    return trainer.train(trackers)


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's generators (every device's), as transformers'
    `set_seed` does; importing that one loads `transformers.trainer_utils`, which imports
    peft in every run, LoRA or not."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # CPU and every CUDA device
