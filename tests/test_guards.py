"""Numeric faults are caught where they first appear, named, and stop (or skip) cleanly."""

from __future__ import annotations

import logging
import math

import mlflow
import pytest
import torch
from conftest import run_cli

from ppo_exp.config import PPOConfig
from ppo_exp.ppo import guards
from ppo_exp.ppo.trainer import PPOTrainer

SMOKE = dict(iterations=2, batch_size=8, max_new_tokens=8, eval_every=0, eval_prompts=8,
             num_minibatches=2, ppo_epochs=2, sample_every=0)


def test_first_nonfinite_names_the_first_bad_quantity():
    good = {"a": 1.0, "b": torch.ones(3)}
    assert guards.first_nonfinite(good) is None
    assert guards.first_nonfinite({**good, "c": torch.tensor([1.0, math.nan])}) == "c"
    assert guards.first_nonfinite({"x": math.inf, "c": torch.tensor([math.nan])}) == "x"


def test_divergence_streak_counts_iterations_in_a_row_beyond_the_bound():
    streak = 0
    for kl, expected in ((2.0, 1), (3.0, 2), (0.5, 0), (math.nan, 1)):
        streak = guards.divergence_streak(streak, kl, 1.0)
        assert streak == expected
    assert guards.divergence_streak(5, 9.0, None) == 0


def test_divergence_warns_once_then_fails_when_asked(caplog):
    with caplog.at_level(logging.WARNING, logger="ppo_exp"):
        for streak in (2, 3, 4):
            guards.check_divergence(7, streak, 5.0, bound=1.0, patience=3, fail=False)
    assert len(caplog.records) == 1 and "iteration 7" in caplog.text
    with pytest.raises(guards.TrainingFault, match="approx_kl=5 > max_approx_kl=1"):
        guards.check_divergence(7, 3, 5.0, bound=1.0, patience=3, fail=True)


def trainer_with(**overrides) -> PPOTrainer:
    return PPOTrainer(PPOConfig(**{**SMOKE, **overrides}))


@pytest.mark.slow
def test_nan_reward_stops_at_the_rollout(base_model_path):
    trainer = trainer_with()
    scorer = trainer.sampler.scorer
    trainer.sampler.scorer = lambda texts: scorer(texts) * math.nan
    with pytest.raises(guards.TrainingFault, match="iteration 1: non-finite reward scores"):
        trainer.train()


@pytest.mark.slow
def test_nan_loss_stops_in_the_update(base_model_path):
    trainer = trainer_with()
    loss = trainer.replay.loss

    def nan_loss(*args):
        value, stats = loss(*args)
        return value * math.nan, {**stats, "loss/total": stats["loss/total"] * math.nan}

    trainer.replay.loss = nan_loss
    with pytest.raises(guards.TrainingFault, match="iteration 1: non-finite loss/total"):
        trainer.train()


@pytest.mark.slow
def test_nan_gradient_is_skipped_when_asked_and_the_weights_stay_put(base_model_path):
    trainer = trainer_with(on_nonfinite="skip")
    head = trainer.model.value_head.weight
    head.register_hook(lambda grad: grad * math.nan)  # every critic gradient is NaN
    before = [p.detach().clone() for group in trainer.replay.groups for p in group]
    final = trainer.train()
    assert final["policy/skipped_minibatches"] == SMOKE["ppo_epochs"] * SMOKE["num_minibatches"]
    after = [p.detach() for group in trainer.replay.groups for p in group]
    assert all(torch.equal(a, b) for a, b in zip(after, before, strict=True))

    stopping = trainer_with()
    stopping.model.value_head.weight.register_hook(lambda grad: grad * math.nan)
    with pytest.raises(guards.TrainingFault, match="gradient norm of the critic"):
        stopping.train()


def nan_on_call(n: int):
    """A gradient hook that turns the gradient NaN on its `n`-th call only (from 1)."""
    calls = []

    def hook(grad):
        calls.append(1)
        return grad * math.nan if len(calls) == n else grad

    return hook


def steps_taken(replay) -> set[int]:
    """The optimiser's step count of every parameter (one value when all stepped alike)."""
    return {int(state["step"]) for state in replay.optimizer.state.values()}


@pytest.mark.slow
@pytest.mark.parametrize("on_nonfinite", ["skip", "stop"])
def test_one_bad_minibatch_is_skipped_on_the_device_or_stops_every_later_step(
    base_model_path, on_nonfinite
):
    """The non-finite check is decided on the device (the fused AdamW's found_inf): with
    skip only the bad minibatch's step is left out; with stop no step runs after it and
    the update then fails naming it, the weights as the step before left them."""
    torch.manual_seed(0)
    trainer = trainer_with(on_nonfinite=on_nonfinite, ppo_epochs=2, num_minibatches=4)
    rollout = trainer.rollout(trainer.train_prompts[:8])
    advantages, returns = trainer.advantages(rollout, trainer.token_rewards(rollout))
    steps = 2 * 4
    trainer.model.value_head.weight.register_hook(nan_on_call(3))  # the 3rd minibatch
    if on_nonfinite == "skip":
        metrics = trainer.replay.update(rollout, advantages, returns, iteration=1)
        assert metrics["policy/skipped_minibatches"] == 1
        assert metrics["policy/epochs"] == 2
        assert steps_taken(trainer.replay) == {steps - 1}
        assert all(math.isfinite(v) for v in metrics.values())
        return
    with pytest.raises(guards.TrainingFault,
                       match="iteration 1: non-finite gradient norm of the critic"):
        trainer.replay.update(rollout, advantages, returns, iteration=1)
    assert steps_taken(trainer.replay) == {2}  # the two minibatches before the bad one


@pytest.mark.slow
def test_divergence_can_fail_a_run(base_model_path):
    trainer = trainer_with(max_approx_kl=1e-12, divergence_patience=1,
                           on_divergence="fail")
    with pytest.raises(guards.TrainingFault, match="iteration 1: policy/approx_kl"):
        trainer.train()


@pytest.mark.slow
def test_a_huge_reward_fails_the_run_in_one_line_and_mlflow_says_why(
    tmp_path, mlflow_uri, base_model_path
):
    (tmp_path / "huge.py").write_text("def score(texts):\n    return [1e38] * len(texts)\n")
    args = [f"{k}={v}" for k, v in SMOKE.items()]
    result = run_cli(*args, "reward=function", "reward.function=huge:score",
                     "hydra.run.dir=outputs/run", cwd=tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("error:")]
    assert "iteration 1: non-finite" in line
    mlflow.set_tracking_uri(mlflow_uri)
    (run,) = mlflow.search_runs(experiment_names=["ppo_exp"], output_format="list")
    assert run.info.status == "FAILED"
    assert "non-finite" in run.data.tags["ppo_exp.error"]
