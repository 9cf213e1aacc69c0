"""The trainer's speed-ups change no result: trimmed minibatches, the eval in chunks."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from ppo_exp.config import PPOConfig
from ppo_exp.ppo.replay import Replay, Statistics, read
from ppo_exp.ppo.rollout import ResponseTokens, minibatch_of
from ppo_exp.ppo.trainer import PPOTrainer

SMOKE = dict(iterations=1, batch_size=8, max_new_tokens=24, eval_every=0, eval_prompts=8,
             num_minibatches=2, ppo_epochs=2)


@pytest.fixture(scope="module")
def trained_rollout(base_model_path):
    torch.manual_seed(0)
    trainer = PPOTrainer(PPOConfig(**SMOKE))
    rollout = trainer.rollout(trainer.train_prompts[:8])
    advantages, returns = trainer.advantages(rollout, trainer.token_rewards(rollout))
    return trainer, rollout, advantages, returns


def test_minibatch_statistics_are_read_back_by_name_in_minibatch_order():
    """Each minibatch's statistics stay one stacked tensor until the update reads them all."""
    first = Statistics.of({"loss/total": torch.tensor(1.5), "policy/clipfrac": torch.tensor(0.25)})
    second = Statistics.of({"loss/total": torch.tensor(-2.0), "policy/clipfrac": torch.tensor(0.5)})
    assert float(second["policy/clipfrac"]) == 0.5
    assert list(second) == ["loss/total", "policy/clipfrac"]
    assert second == {"loss/total": -2.0, "policy/clipfrac": 0.5} and second != first
    assert read([first, second]) == {"loss/total": [1.5, -2.0], "policy/clipfrac": [0.25, 0.5]}
    assert read([]) == {}


@pytest.mark.slow
def test_a_trimmed_minibatch_gives_the_same_outputs_at_every_real_position(trained_rollout):
    trainer, rollout, advantages, returns = trained_rollout
    lengths = rollout.mask.sum(1).long()
    T = rollout.response.shape[1]
    i = torch.argsort(lengths)[:4]  # the shortest responses: the most padding to cut
    longest = int(lengths[i].max())
    assert longest < T, "the test needs a minibatch shorter than the batch"
    full = minibatch_of(rollout, advantages, returns, i, T)
    cut = minibatch_of(rollout, advantages, returns, i, longest)
    assert cut.input_ids.shape[1] == full.input_ids.shape[1] - (T - longest)
    assert torch.equal(cut.response, full.response[:, :longest])
    assert not full.mask[:, longest:].any()  # only padding was dropped
    with torch.no_grad():
        logits_full, values_full = trainer.model(full.input_ids, full.attention_mask,
                                                 full.position_ids, T)
        logits_cut, values_cut = trainer.model(cut.input_ids, cut.attention_mask,
                                               cut.position_ids, longest)
    real = cut.mask.bool()
    torch.testing.assert_close(logits_cut[real], logits_full[:, :longest][real],
                               atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(values_cut[real], values_full[:, :longest][real],
                               atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_a_packed_minibatch_takes_the_real_tokens_of_its_rows_in_their_order(trained_rollout):
    # The packed update's targets come from one gather of every row's real tokens per
    # update: a minibatch's must be its padded rows' real tokens, row after row, bitwise.
    trainer, rollout, advantages, returns = trained_rollout
    tokens = ResponseTokens.of(rollout, advantages, returns)
    lengths = rollout.mask.sum(1).long()
    assert len(set(lengths.tolist())) > 1, "the test needs responses of several lengths"
    for i in (torch.tensor([5, 0, 7, 2]), torch.tensor([3]), torch.randperm(8)):
        longest = int(lengths[i].max())
        padded = minibatch_of(rollout, advantages, returns, i, longest)
        packed = minibatch_of(rollout, advantages, returns, i, longest, tokens)
        assert packed.mask is None and packed.response_length == padded.response_length
        for name in ("input_ids", "attention_mask", "position_ids"):  # the forward's
            assert torch.equal(getattr(packed, name), getattr(padded, name)), name
        real = padded.mask.bool()
        for name in ("response", "logprobs", "values", "advantages", "returns"):
            assert torch.equal(getattr(packed, name), getattr(padded, name)[real]), name


@pytest.mark.slow
def test_the_eval_scores_a_training_batch_at_a_time_with_the_same_metrics(base_model_path):
    # 10 held-out prompts, batch_size 4: the forwards see 4, 4 and 2 rows, never all 10
    # (the eval's logits would otherwise set the run's peak memory), with the same metrics.
    trainer = PPOTrainer(PPOConfig(**{**SMOKE, "batch_size": 4, "eval_prompts": 10}))
    rows: list[int] = []
    forward = trainer.model.forward

    def counting(input_ids, *args, **kwargs):
        rows.append(len(input_ids))
        return forward(input_ids, *args, **kwargs)

    trainer.model.forward = counting
    chunked = trainer.evaluate()
    assert rows == [4, 4, 2]
    rows.clear()
    sampler = trainer.sampler
    sampler.cfg = dataclasses.replace(sampler.cfg, rollout_micro_batch=10)  # all at once
    whole = trainer.evaluate()
    assert rows == [10]
    assert chunked == whole


@pytest.mark.slow
def test_a_compiled_update_forward_gives_the_eager_loss_and_gradients(trained_rollout):
    trainer, rollout, advantages, returns = trained_rollout
    rows = torch.arange(4)
    padded = dataclasses.replace(trainer.cfg, pack_minibatches=False)  # compile: padded only
    eager = Replay(padded, trainer.model, device=trainer.device, dtype=trainer.dtype)

    def loss_and_gradients(replay):
        stats = replay.gradients(rollout, rows, advantages, returns)
        stats = {name: float(value) for name, value in stats.items()}
        return stats, [p.grad.clone() for group in replay.groups for p in group]

    eager_stats, eager_grads = loss_and_gradients(eager)
    compiled = Replay(dataclasses.replace(padded, compile=True), trainer.model,
                      device=trainer.device, dtype=trainer.dtype)
    assert compiled.forward is not trainer.model  # the compiled module, same parameters
    stats, grads = loss_and_gradients(compiled)
    assert stats == pytest.approx(eager_stats, rel=1e-4, abs=1e-6)
    for a, b in zip(eager_grads, grads, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-5)
