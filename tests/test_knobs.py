"""Knobs that do what their names say (each of these tests fails on the old trainer).

- the adaptive KL controller can move its coefficient within a run;
- `vf_coef` scales the critic's step and does not reach the policy's;
- `target_kl` can stop the replay after the first epoch with one minibatch per epoch,
  and never stops the update's first step;
- `eval/reward_mean` is the reward model's own score, the penalised one has its name;
- rollout tensors are ordinary tensors, not inference tensors.
"""

from __future__ import annotations

import math

import pytest
import torch
from hydra import compose, initialize_config_module

from ppo_exp.config import PPOConfig, to_config
from ppo_exp.ppo import control
from ppo_exp.ppo.trainer import PPOTrainer, train

SMOKE = dict(iterations=1, batch_size=8, max_new_tokens=8, eval_every=0, eval_prompts=8)


def test_adaptive_kl_step_by_hand():
    # error = 12/6 - 1 = 1, clipped to 0.2; 1 + 0.2 * 64 / 640 = 1.02
    assert control.adaptive_kl_coef(1.0, 12.0, target=6.0, batch_size=64, horizon=640) == (
        pytest.approx(1.02)
    )
    # error = 5.7/6 - 1 = -0.05: 0.5 * (1 - 0.05 * 64 / 640) = 0.4975
    assert control.adaptive_kl_coef(0.5, 5.7, target=6.0, batch_size=64, horizon=640) == (
        pytest.approx(0.4975)
    )
    assert control.kl_horizon(None, iterations=30, batch_size=64) == 192
    assert control.kl_horizon(500, iterations=30, batch_size=64) == 500


@pytest.mark.parametrize("train_preset", ["default", "study"])
def test_the_adaptive_kl_preset_moves_the_coefficient_within_a_run(train_preset):
    with initialize_config_module("ppo_exp.conf", version_base=None):
        cfg = to_config(compose("config", overrides=["kl=adaptive", f"train={train_preset}"]))
    horizon = control.kl_horizon(cfg.kl_horizon, iterations=cfg.iterations,
                                 batch_size=cfg.batch_size)
    up = down = cfg.kl_coef
    for _ in range(cfg.iterations):  # a KL held at twice, then half, the target
        up = control.adaptive_kl_coef(up, 2 * cfg.kl_target, target=cfg.kl_target,
                                      batch_size=cfg.batch_size, horizon=horizon)
        down = control.adaptive_kl_coef(down, cfg.kl_target / 2, target=cfg.kl_target,
                                        batch_size=cfg.batch_size, horizon=horizon)
    # e^±2 up to the (1 + x)^n < e^(nx) gap; horizon 10000 gave ×1.04 and ×1.013
    assert up / cfg.kl_coef > 5 and down / cfg.kl_coef < 0.2


def first_update_deltas(vf_coef: float) -> tuple[torch.Tensor, torch.Tensor]:
    """How far one update moves the policy's and the critic's parameters (flattened)."""
    cfg = PPOConfig(**SMOKE, ppo_epochs=1, num_minibatches=1, vf_coef=vf_coef, seed=1)
    trainer = PPOTrainer(cfg)
    before = [[p.detach().clone() for p in group] for group in trainer.replay.groups]
    rollout = trainer.rollout(trainer.train_prompts[: cfg.batch_size])
    assert not any(x.is_inference() for x in rollout if torch.is_tensor(x))
    trainer.update(rollout, *trainer.advantages(rollout, trainer.token_rewards(rollout)))
    return tuple(
        torch.cat([(p.detach() - b).flatten() for p, b in zip(group, old, strict=True)])
        for group, old in zip(trainer.replay.groups, before, strict=True)
    )


@pytest.mark.slow
def test_vf_coef_scales_the_critics_step_and_not_the_policys(base_model_path):
    policy_1, critic_1 = first_update_deltas(0.1)
    policy_2, critic_2 = first_update_deltas(0.2)
    torch.testing.assert_close(policy_2, policy_1, rtol=0, atol=0)  # no leak into the policy
    moved = critic_1.abs() > 0
    assert moved.any()
    # Adam's first step is lr * g / (|g| + eps) ≈ ±lr: twice the vf_coef, twice the step
    ratio = critic_2[moved].abs() / critic_1[moved].abs()
    assert ratio.median() == pytest.approx(2.0, rel=1e-3)


@pytest.mark.slow
@pytest.mark.parametrize("pack", [True, False], ids=["packed", "padded"])
def test_target_kl_can_stop_after_the_first_epoch_with_one_minibatch(base_model_path, pack):
    final = train(PPOConfig(**SMOKE, ppo_epochs=4, num_minibatches=1, target_kl=1e-12,
                            pack_minibatches=pack))
    # epoch 1's only minibatch is stepped (nothing moved the policy yet: approx-KL 0, or
    # ~1e-9 from packed rows' float rounding on some CPUs); epoch 2's is stopped before it
    assert final["policy/epochs"] == 1


@pytest.mark.slow
def test_the_updates_first_step_is_never_stopped(base_model_path, monkeypatch):
    checked = []

    def always_stop(approx_kl, target_kl):
        checked.append(float(approx_kl))
        return True

    monkeypatch.setattr(control, "stop_replay", always_stop)
    final = train(PPOConfig(**SMOKE, ppo_epochs=4, num_minibatches=2, target_kl=0.1))
    # one step, then the check before minibatch 2 (after that step) stops the replay
    assert final["policy/epochs"] == 1 and len(checked) == 1


@pytest.mark.slow
def test_eval_reward_mean_is_the_raw_score_and_the_penalised_one_has_its_name(
    base_model_path,
):
    penalty = 5.0
    cfg = PPOConfig(**{**SMOKE, "max_new_tokens": 2}, missing_eos_penalty=penalty)
    final = train(cfg)
    missing = (final["eval/reward_mean"] - final["eval/penalized_reward_mean"]) / penalty
    n = cfg.eval_prompts
    assert 0 < missing <= 1 + 1e-6  # two tokens: most responses are cut off
    assert math.isclose(missing * n, round(missing * n), abs_tol=1e-4)  # k of n responses
