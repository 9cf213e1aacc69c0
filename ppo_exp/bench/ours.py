"""ppo_exp's own trainer, timed phase by phase, in a process of its own.

The trainer is not modified: its parts are wrapped (see `clock.PhaseClock`) for the
duration of the run, so the figures are those of the code users run. An iteration ends
when the trainer hands its metrics to the trackers; `eval` (held-out sampling) is timed
apart and left out of the per-iteration figures.
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
import time
from typing import Any

from ppo_exp.bench.clock import PhaseClock, after_imports, patched, result, to_phases

# Where each wrapped call's time goes (see `clock.to_phases`).
MAPPING = {
    "rollout": "rollout_other",
    "rollout/generate": "generate",
    "rollout/actor_critic": "rollout_other",  # the value head, under the two trunks
    "rollout/actor_critic/policy": "score_policy",
    "rollout/actor_critic/critic": "score_critic",
    "rollout/reference": "score_reference",
    "rollout/reward": "score_reward",
    "kl_rewards": "gae",
    "gae": "gae",
    "update": "update_loss",
    "update/actor_critic": "update_forward",
    "update/backward": "update_backward",
    "update/clip": "update_clip",
    "update/optimizer_step": "update_step",
    # the step that skips itself on a non-finite loss or gradient norm: the check is
    # timed with the step whose `found_inf` it sets (first after clipping, it also pays
    # for what clipping left cold, as the floor's step does)
    "update/clipped_step": "update_step",
    "update/clipped_step/clip": "update_clip",
    "update/clipped_step/optimizer_step": "update_step",
    "logging": "logging",
}


def run(spec: dict[str, Any]) -> dict[str, Any]:
    """Train per `spec` (see `suite.Spec`) and return per-iteration phase timings."""
    started = time.perf_counter()
    import torch

    from ppo_exp.config import ModelConfig, PPOConfig, RewardConfig
    from ppo_exp.ppo import trainer as trainer_module
    from ppo_exp.resources import keep_freed_memory

    startup = after_imports(started, spec["threads"])
    keep_freed_memory()  # as a job does (`run.train_and_track`)

    reward = (  # "classifier" reads the policy's ids, as TRL's and the floor's does
        RewardConfig(name=None, kind="classifier", path=spec["reward"], label=0, text="full",
                     input="text" if spec["reward_kind"] == "classifier-text" else "tokens")
        if spec["reward_kind"].startswith("classifier")
        else RewardConfig()
    )
    settings = dict(
        iterations=spec["iterations"],
        batch_size=spec["batch_size"],
        max_new_tokens=spec["max_new_tokens"],
        ppo_epochs=spec["ppo_epochs"],
        num_minibatches=spec["num_minibatches"],
        eval_every=0,
        eval_prompts=spec["eval_prompts"],
        sample_every=0,
        seed=spec["seed"],
        model=ModelConfig(
            name=None, path=spec["policy"], value_model=spec["value_model"],
            device=spec.get("device", "cpu"), dtype="float32",  # TRL's and the floor's
        ),
        reward=reward,
    )
    cfg = PPOConfig(**{**settings, **spec.get("config", {})})  # a variant's keys win
    t0 = time.perf_counter()
    trainer = trainer_module.PPOTrainer(cfg)
    init_s = time.perf_counter() - t0

    clock = PhaseClock(spec.get("clock", "wall"))
    iterations: list[dict[str, Any]] = []
    boundary = [clock.now()]

    class Timed:
        """Tracker: its log call ends an iteration; logging itself is a timed phase."""

        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def log_metrics(self, metrics: dict[str, float], step: int) -> None:
            if self.inner is not None:
                clock.wrap("logging", self.inner.log_metrics)(metrics, step)
            now = clock.now()
            phases = clock.take()
            if step > 0:
                wall = now - boundary[0] - phases.get("eval", 0.0)
                length = metrics["rollout/response_length"]
                iterations.append(
                    {
                        "step": step,
                        "wall_s": wall,
                        "phases": to_phases(phases, wall, MAPPING),
                        "response_tokens": length * cfg.batch_size,
                    }
                )
            boundary[0] = now

        def log_samples(self, samples: Any, step: int) -> None:
            if self.inner is not None:
                clock.wrap("logging", self.inner.log_samples)(samples, step)

    harness_s = 0.0
    with contextlib.ExitStack() as stack:
        model = trainer.model
        wraps = [
            (trainer, "rollout"), (trainer, "token_rewards"), (trainer, "advantages"),
            (trainer, "update"), (trainer.replay, "clipped_step"),
            (trainer, "evaluate"), (trainer.sampler.scorer, None), (model.policy, "generate"),
            (model, "forward"), (model.policy, "forward"), (model.critic, "forward"),
            (trainer.ref, "logits"), (trainer.ref, "forward"), (trainer.replay.optimizer, "step"),
        ]
        names = {
            "rollout": "rollout", "token_rewards": "kl_rewards", "advantages": "gae",
            "update": "update", "evaluate": "eval",
            "generate": "generate", "step": "optimizer_step", "logits": "reference",
            "clipped_step": "clipped_step",
        }
        if trainer.cfg.pack_minibatches:  # the update calls model.packed, held by the replay
            wraps.append((trainer.replay, "forward"))
        for owner, attribute in wraps:
            if owner is None or attribute and not hasattr(owner, attribute):
                continue  # shared critic: no critic trunk
            if attribute is None:  # the reward scorer is a plain function
                trainer.sampler.scorer = clock.wrap("reward", trainer.sampler.scorer)
                continue
            name = names.get(attribute)
            if attribute == "forward":
                name = {id(model): "actor_critic", id(trainer.replay): "actor_critic",
                        id(model.policy): "policy",
                        id(trainer.ref): "reference"}.get(id(owner), "critic")
            timed = clock.wrap(name, getattr(owner, attribute))
            stack.enter_context(patched(owner, attribute, timed))
        backward = clock.wrap("backward", torch.Tensor.backward)
        stack.enter_context(patched(torch.Tensor, "backward", backward))
        utils = torch.nn.utils
        clip = clock.wrap("clip", utils.clip_grad_norm_)
        stack.enter_context(patched(utils, "clip_grad_norm_", clip))
        tracker = None
        if spec.get("mlflow", True):
            t0 = time.perf_counter()
            from omegaconf import OmegaConf

            from ppo_exp import tracking

            workdir = stack.enter_context(tempfile.TemporaryDirectory())
            cfg.mlflow.tracking_uri = spec.get("tracking_uri") or f"sqlite:///{workdir}/mlflow.db"
            tracker = stack.enter_context(tracking.start_run(cfg, OmegaConf.structured(cfg)))
            harness_s += time.perf_counter() - t0
        boundary[0] = clock.now()
        trainer.train([Timed(tracker)])
        t0 = time.perf_counter()
    harness_s += time.perf_counter() - t0  # closing the MLflow run
    return result("ppo_exp", iterations, startup, init_s=init_s, harness_s=harness_s,
                  mlflow_loaded="mlflow" in sys.modules)
