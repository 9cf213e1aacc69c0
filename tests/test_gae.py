"""Tests for ppo_exp.ppo.gae.compute_gae, with expected values worked out by hand."""

from __future__ import annotations

import random

import pytest
import torch

from ppo_exp.ppo.gae import compute_gae


def test_hand_computed_gamma09_lam08():
    # gamma = 0.9, lam = 0.8, so gamma * lam = 0.72; V after the last token is 0.
    rewards = torch.tensor([[1.0, 0.0, 2.0]])
    values = torch.tensor([[0.5, 1.0, 1.5]])
    # delta_2 = 2 + 0.9 * 0   - 1.5 = 0.5
    # delta_1 = 0 + 0.9 * 1.5 - 1.0 = 0.35
    # delta_0 = 1 + 0.9 * 1.0 - 0.5 = 1.4
    # A_2 = 0.5
    # A_1 = 0.35 + 0.72 * 0.5  = 0.35 + 0.36   = 0.71
    # A_0 = 1.4  + 0.72 * 0.71 = 1.4  + 0.5112 = 1.9112
    # returns = A + V = [1.9112 + 0.5, 0.71 + 1.0, 0.5 + 1.5] = [2.4112, 1.71, 2.0]
    adv, ret = compute_gae(rewards, values, torch.ones(1, 3), gamma=0.9, lam=0.8)
    torch.testing.assert_close(adv, torch.tensor([[1.9112, 0.71, 0.5]]))
    torch.testing.assert_close(ret, torch.tensor([[2.4112, 1.71, 2.0]]))


def test_lam0_gives_one_step_td_errors():
    # Same inputs as above with lam = 0: A_t = delta_t = [1.4, 0.35, 0.5], and
    # returns = r_t + gamma * V_{t+1} = [1 + 0.9 * 1.0, 0 + 0.9 * 1.5, 2 + 0] = [1.9, 1.35, 2.0].
    rewards = torch.tensor([[1.0, 0.0, 2.0]])
    values = torch.tensor([[0.5, 1.0, 1.5]])
    adv, ret = compute_gae(rewards, values, torch.ones(1, 3), gamma=0.9, lam=0.0)
    torch.testing.assert_close(adv, torch.tensor([[1.4, 0.35, 0.5]]))
    torch.testing.assert_close(ret, torch.tensor([[1.9, 1.35, 2.0]]))


@pytest.mark.parametrize(
    "values",
    [
        [0.0, 0.0, 0.0],
        [0.5, 1.0, 1.5],
        [-7.0, 3.0, 100.0],
    ],
)
def test_lam1_gamma1_returns_are_reward_to_go(values):
    # Rewards [1, 2, 3]: reward-to-go = [1 + 2 + 3, 2 + 3, 3] = [6, 5, 3], whatever V is
    # (the V terms telescope away); the advantages are then returns - V.
    rewards = torch.tensor([[1.0, 2.0, 3.0]])
    values_t = torch.tensor([values])
    adv, ret = compute_gae(rewards, values_t, torch.ones(1, 3), gamma=1.0, lam=1.0)
    torch.testing.assert_close(ret, torch.tensor([[6.0, 5.0, 3.0]]))
    torch.testing.assert_close(adv, torch.tensor([[6.0, 5.0, 3.0]]) - values_t)


def test_docstring_example():
    r = torch.tensor([[0.0, 0.0, 1.0]])
    adv, ret = compute_gae(r, torch.zeros(1, 3), torch.ones(1, 3), gamma=1.0, lam=1.0)
    assert ret.tolist() == [[1.0, 1.0, 1.0]]
    assert adv.tolist() == [[1.0, 1.0, 1.0]]


def _padded_batch():
    # Row 0 has 4 response tokens, row 1 only 2 (right-padded).
    rewards = torch.tensor([[0.0, 0.5, 0.0, 1.0], [1.0, 2.0, 0.0, 0.0]])
    values = torch.tensor([[0.2, 0.4, 0.6, 0.8], [0.5, 1.5, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 0.0, 0.0]])
    return rewards, values, mask


def test_padded_row_matches_the_row_run_alone_and_is_zero_on_padding():
    rewards, values, mask = _padded_batch()
    adv, ret = compute_gae(rewards, values, mask, gamma=0.9, lam=0.8)

    # Padding is exactly zero.
    assert adv[1, 2:].tolist() == [0.0, 0.0]
    assert ret[1, 2:].tolist() == [0.0, 0.0]

    # Each row equals the same row run alone, truncated to its own length.
    adv0, ret0 = compute_gae(rewards[:1], values[:1], mask[:1], gamma=0.9, lam=0.8)
    adv1, ret1 = compute_gae(rewards[1:, :2], values[1:, :2], torch.ones(1, 2), gamma=0.9, lam=0.8)
    torch.testing.assert_close(adv[:1], adv0)
    torch.testing.assert_close(ret[:1], ret0)
    torch.testing.assert_close(adv[1:, :2], adv1)
    torch.testing.assert_close(ret[1:, :2], ret1)

    # And row 1 by hand (gamma * lam = 0.72; V after the last real token is 0):
    # delta_1 = 2 + 0 - 1.5 = 0.5;  delta_0 = 1 + 0.9 * 1.5 - 0.5 = 1.85
    # A_1 = 0.5;  A_0 = 1.85 + 0.72 * 0.5 = 2.21;  returns = [2.21 + 0.5, 0.5 + 1.5] = [2.71, 2.0]
    torch.testing.assert_close(adv[1], torch.tensor([2.21, 0.5, 0.0, 0.0]))
    torch.testing.assert_close(ret[1], torch.tensor([2.71, 2.0, 0.0, 0.0]))


def test_padding_values_and_rewards_do_not_leak():
    rewards, values, mask = _padded_batch()
    adv, ret = compute_gae(rewards, values, mask, gamma=0.9, lam=0.8)

    # Huge values on padding: if V_{T} after the last real token were read from the padding,
    # row 1's last delta would be 2 + 0.9 * 1e6 - 1.5 instead of 0.5.
    big_values = values.clone()
    big_values[1, 2:] = torch.tensor([1e6, -1e6])
    adv_v, ret_v = compute_gae(rewards, big_values, mask, gamma=0.9, lam=0.8)
    torch.testing.assert_close(adv_v, adv)
    torch.testing.assert_close(ret_v, ret)

    # Huge rewards on padding must not be discounted back into the response either.
    big_rewards = rewards.clone()
    big_rewards[1, 2:] = torch.tensor([1e6, 1e6])
    adv_r, ret_r = compute_gae(big_rewards, values, mask, gamma=0.9, lam=0.8)
    torch.testing.assert_close(adv_r, adv)
    torch.testing.assert_close(ret_r, ret)


def test_bool_mask_is_accepted():
    rewards, values, mask = _padded_batch()
    adv_f, ret_f = compute_gae(rewards, values, mask, gamma=0.9, lam=0.8)
    adv_b, ret_b = compute_gae(rewards, values, mask.bool(), gamma=0.9, lam=0.8)
    torch.testing.assert_close(adv_b, adv_f)
    torch.testing.assert_close(ret_b, ret_f)


def _reference_gae(rewards, values, lengths, gamma, lam):
    """Plain-Python GAE: one row at a time, one token at a time, from the end."""
    B, T = len(rewards), len(rewards[0])
    adv = [[0.0] * T for _ in range(B)]
    ret = [[0.0] * T for _ in range(B)]
    for b in range(B):
        next_value = 0.0  # V after the last real token
        next_adv = 0.0
        for t in reversed(range(lengths[b])):
            delta = rewards[b][t] + gamma * next_value - values[b][t]
            next_adv = delta + gamma * lam * next_adv
            adv[b][t] = next_adv
            ret[b][t] = next_adv + values[b][t]
            next_value = values[b][t]
    return adv, ret


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_matches_plain_python_double_loop(seed):
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    B, T = 5, 7
    gamma, lam = rng.uniform(0.5, 1.0), rng.uniform(0.0, 1.0)
    lengths = [T] + [rng.randint(1, T) for _ in range(B - 1)]  # one full row, the rest random
    rng.shuffle(lengths)
    mask = torch.tensor([[1.0] * n + [0.0] * (T - n) for n in lengths], dtype=torch.float64)
    rewards = torch.randn(B, T, generator=gen, dtype=torch.float64)
    values = torch.randn(B, T, generator=gen, dtype=torch.float64)

    adv, ret = compute_gae(rewards, values, mask, gamma=gamma, lam=lam)
    ref_adv, ref_ret = _reference_gae(rewards.tolist(), values.tolist(), lengths, gamma, lam)
    torch.testing.assert_close(adv, torch.tensor(ref_adv, dtype=torch.float64))
    torch.testing.assert_close(ret, torch.tensor(ref_ret, dtype=torch.float64))
