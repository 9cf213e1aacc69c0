"""The trainer in-process: reproducibility, learning, and loading any HF checkpoint."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import Recorder

from ppo_exp.config import PPOConfig, RewardConfig
from ppo_exp.metrics import METRICS
from ppo_exp.ppo.replay import lr_factor
from ppo_exp.ppo.trainer import PPOTrainer, train
from ppo_exp.task.base_model import load_causal_lm

SMOKE = dict(iterations=3, batch_size=16, max_new_tokens=12, eval_every=0, eval_prompts=16)


def without_timings(history):
    return {
        step: {k: v for k, v in m.items() if not k.startswith("perf/")}
        for step, m in history.items()
    }


@pytest.fixture
def two_threads():
    """torch's intra-op threads pinned to 2: CPU results are identical for the same seed
    *and thread count* (a reduction split another way rounds differently)."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield 2
    torch.set_num_threads(before)


@pytest.mark.slow
def test_same_seed_and_thread_count_give_identical_metrics(base_model_path, two_threads):
    first, second, other = Recorder(), Recorder(), Recorder()
    train(PPOConfig(**SMOKE, seed=3), [first])
    assert torch.get_num_threads() == two_threads  # the trainer keeps the count it is given
    train(PPOConfig(**SMOKE, seed=3), [second])
    train(PPOConfig(**SMOKE, seed=4), [other])
    assert without_timings(first.metrics) == without_timings(second.metrics)
    assert without_timings(first.metrics) != without_timings(other.metrics)


@pytest.mark.slow
def test_a_classifier_reading_tokens_scores_the_policys_own_ids(base_model_path, tmp_path):
    # reward.input=tokens: each response is scored on the ids the policy saw and sampled
    # (prompt + response, stop token included), never decoded and re-tokenised.
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(1)
    reward = AutoModelForSequenceClassification.from_pretrained(base_model_path, num_labels=1)
    reward.config.pad_token_id = AutoTokenizer.from_pretrained(base_model_path).pad_token_id
    reward.save_pretrained(tmp_path / "reward")
    AutoTokenizer.from_pretrained(base_model_path).save_pretrained(tmp_path / "reward")
    cfg = PPOConfig(**SMOKE, reward=RewardConfig(
        name=None, kind="classifier", path=str(tmp_path / "reward"), label=0, text="full",
        input="tokens",
    ))
    trainer = PPOTrainer(cfg)
    rollout = trainer.rollout(trainer.train_prompts[:8])
    reward.eval()
    with torch.no_grad():
        alone = torch.stack([
            reward(input_ids=ids[mask.bool()][None]).logits[0, 0]
            for ids, mask in zip(rollout.input_ids, rollout.attention_mask, strict=True)
        ])
    torch.testing.assert_close(rollout.raw_scores, alone, atol=1e-5, rtol=1e-5)
    assert rollout.raw_scores.std() > 0  # not one constant score
    trainer.train()  # and a run trains on them


@pytest.mark.slow
def test_first_minibatch_ratio_is_exactly_one(base_model_path):
    # Rollout log-probs come from the same forward pass as the update, so before any
    # optimiser step the policy ratio is 1 and approx-KL is 0.
    cfg = PPOConfig(**SMOKE, ppo_epochs=1, num_minibatches=1, lr=1e-12)
    recorder = Recorder()
    train(cfg, [recorder])
    assert recorder.metrics[1]["policy/ratio"] == pytest.approx(1.0, abs=1e-5)
    assert recorder.metrics[1]["policy/approx_kl"] == pytest.approx(0.0, abs=1e-6)
    assert recorder.metrics[1]["policy/clipfrac"] == 0.0


@pytest.mark.slow
def test_rollout_masks_after_the_stop_token_and_scores_the_last_real_token(base_model_path):
    trainer = PPOTrainer(PPOConfig(**SMOKE))
    r = trainer.rollout(trainer.train_prompts[:16])
    eos, pad = trainer.tokenizer.eos_token_id, trainer.tokenizer.pad_token_id
    lengths = r.mask.sum(1).long()
    for row, n in zip(r.response, lengths, strict=True):
        assert (row[n:] == pad).all()
        assert (row[: n - 1] != eos).all()
    rewards = trainer.token_rewards(r)
    last = lengths - 1
    kl_part = rewards.clone()
    kl_part[torch.arange(16), last] -= r.scores
    expected_kl = -trainer.kl_coef * (r.logprobs - r.ref_logprobs) * r.mask
    assert torch.allclose(kl_part, expected_kl, atol=1e-6)
    assert (rewards * (1 - r.mask) == 0).all()


@pytest.mark.slow
def test_learning_curve_areas_are_the_means_of_the_evals_after_step_0(base_model_path):
    recorder = Recorder()
    train(PPOConfig(**{**SMOKE, "eval_every": 1}), [recorder])
    history = recorder.metrics
    # metrics.METRICS (what `objective` and study objectives may name) is what is logged;
    # the gold scorer's metrics only when reward.gold is set
    gold = {"eval/gold_mean", "eval/gold_std"}
    assert set().union(*history.values()) == set(METRICS) - gold
    assert "eval/score_auc" not in history[0]  # step 0 is the base model, not learning
    for step in (1, 2, 3):
        for curve, area in (("eval/score", "eval/score_auc"),
                            ("eval/reward_mean", "eval/reward_auc")):
            values = [history[s][curve] for s in range(1, step + 1)]
            assert history[step][area] == pytest.approx(sum(values) / step)
    assert history[3]["eval/score"] == pytest.approx(
        history[3]["eval/reward_mean"] - 0.05 * history[3]["eval/kl"]
    )


@pytest.mark.slow
def test_a_short_run_raises_the_held_out_reward(base_model_path):
    recorder = Recorder()
    final = train(PPOConfig(iterations=12, eval_every=12, sample_every=12), [recorder])
    base = recorder.metrics[0]["eval/reward_mean"]
    assert final["eval/reward_mean"] > base + 0.3, (base, final["eval/reward_mean"])
    assert final["rollout/kl"] < 10  # nats per response: still near the reference
    assert recorder.samples and len(recorder.samples[-1][1]) > 0


@pytest.mark.slow
def test_any_local_hf_checkpoint_trains_with_a_shared_value_head(tmp_path, base_model_path):
    # A checkpoint saved with save_pretrained loads through the same path as a hub id; its
    # tokenizer lacks a pad token, as GPT-2's does.
    model, tokenizer = load_causal_lm(base_model_path)
    tokenizer.pad_token = None
    model.save_pretrained(tmp_path / "ckpt")
    tokenizer.save_pretrained(tmp_path / "ckpt")
    cfg = dataclasses.replace(
        PPOConfig(**SMOKE),
        model=dataclasses.replace(
            PPOConfig().model, path=str(tmp_path / "ckpt"), name="ckpt", value_model="shared"
        ),
    )
    final = train(cfg)
    assert final["rollout/response_length"] > 0
    assert "value/explained_var" in final


def test_lr_factor_decays_linearly_from_1_to_0_at_the_last_update():
    assert [lr_factor(u, 5, decay=True) for u in range(5)] == [1.0, 0.75, 0.5, 0.25, 0.0]
    assert [lr_factor(u, 5, decay=False) for u in range(5)] == [1.0] * 5
    assert lr_factor(0, 1, decay=True) == 1.0  # a one-iteration run keeps its lr


@pytest.mark.slow
def test_lr_decay_logs_lr_down_to_0_at_the_last_iteration(base_model_path):
    recorder = Recorder()
    train(PPOConfig(**{**SMOKE, "lr_decay": True, "lr": 1e-4}), [recorder])
    lrs = [recorder.metrics[it]["policy/lr"] for it in (1, 2, 3)]
    assert lrs == pytest.approx([1e-4, 5e-5, 0.0])
