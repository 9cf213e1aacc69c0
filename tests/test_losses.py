"""Tests for ppo_exp.ppo.losses (and rollout.truncate_after_stop), with hand-worked values."""

from __future__ import annotations

import math

import pytest
import torch

from ppo_exp.ppo import losses
from ppo_exp.ppo.rollout import truncate_after_stop

# Hand constants used below.
E_05 = 1.6487212707  # e^0.5
E_M05 = 0.6065306597  # e^-0.5
E_01 = 1.1051709181  # e^0.1
E_M01 = 0.9048374180  # e^-0.1

# --- masked_mean / masked_var / masked_whiten ----------------------------------------------

# Valid entries are 1, 2, 3 (row 0) and 4, 5 (row 1); 100 and the zeros are padding.
X = torch.tensor([[1.0, 2.0, 3.0, 100.0], [4.0, 5.0, 0.0, 0.0]])
M = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0]])


def test_masked_mean_by_hand():
    # (1 + 2 + 3 + 4 + 5) / 5 = 3; the 100 on padding is ignored.
    torch.testing.assert_close(losses.masked_mean(X, M), torch.tensor(3.0))


def test_masked_mean_empty_mask_is_zero_not_nan():
    assert losses.masked_mean(X, torch.zeros_like(M)).item() == 0.0


def test_masked_var_by_hand():
    # Unbiased: ((1-3)^2 + (2-3)^2 + 0 + (4-3)^2 + (5-3)^2) / (5 - 1) = 10 / 4 = 2.5.
    torch.testing.assert_close(losses.masked_var(X, M), torch.tensor(2.5))


def test_masked_whiten_mean0_std1_padding0():
    w = losses.masked_whiten(X, M)
    # (x - 3) / sqrt(2.5): sqrt(2.5) = 1.5811388, so 1 -> -1.2649111, 2 -> -0.6324555, ...
    s = math.sqrt(2.5)
    expected = torch.tensor([[-2 / s, -1 / s, 0.0, 0.0], [1 / s, 2 / s, 0.0, 0.0]])
    torch.testing.assert_close(w, expected)
    torch.testing.assert_close(losses.masked_mean(w, M), torch.tensor(0.0))
    torch.testing.assert_close(losses.masked_var(w, M), torch.tensor(1.0))
    assert w[0, 3].item() == 0.0 and w[1, 2:].tolist() == [0.0, 0.0]


def test_masked_whiten_without_shift_keeps_the_mean():
    w = losses.masked_whiten(X, M, shift_mean=False)
    # (x - 3) / sqrt(2.5) + 3: the mean stays 3, the variance becomes 1.
    s = math.sqrt(2.5)
    expected = torch.tensor([[3 - 2 / s, 3 - 1 / s, 3.0, 0.0], [3 + 1 / s, 3 + 2 / s, 0.0, 0.0]])
    torch.testing.assert_close(w, expected)
    torch.testing.assert_close(losses.masked_mean(w, M), torch.tensor(3.0))
    torch.testing.assert_close(losses.masked_var(w, M), torch.tensor(1.0))


# --- policy_loss ---------------------------------------------------------------------------

# clip_eps = 0.2, so the clip range is [0.8, 1.2]. One token per case: (log_ratio, advantage).
#   1. lr=+0.5, A=+1: ratio e^0.5 = 1.6487 > 1.2. -A*r = -1.6487, -A*clip = -1.2;
#      max = -1.2, the clipped branch (clip active, no gradient).
#   2. lr=-0.5, A=+1: ratio e^-0.5 = 0.6065 < 0.8. -A*r = -0.6065, -A*clip = -0.8;
#      max = -0.6065, unclipped (the pessimistic bound keeps the bad move's gradient).
#   3. lr=+0.5, A=-1: -A*r = +1.6487, -A*clip = +1.2; max = 1.6487, unclipped.
#   4. lr=-0.5, A=-1: -A*r = +0.6065, -A*clip = +0.8; max = 0.8, clipped (clip active).
#   5. lr=+0.1, A=+2: ratio 1.1052 inside [0.8, 1.2]; both = -2.2103, unclipped.
#   6. lr=-0.1, A=-2: ratio 0.9048 inside; both = +1.8097, unclipped.
POLICY_CASES = [
    # (log_ratio, advantage, expected per-token loss, clip active)
    (0.5, 1.0, -1.2, True),
    (-0.5, 1.0, -E_M05, False),
    (0.5, -1.0, E_05, False),
    (-0.5, -1.0, 0.8, True),
    (0.1, 2.0, -2 * E_01, False),
    (-0.1, -2.0, 2 * E_M01, False),
]


@pytest.mark.parametrize("log_ratio, adv, expected_loss, clipped", POLICY_CASES)
def test_policy_loss_single_token(log_ratio, adv, expected_loss, clipped):
    old = torch.tensor([[-1.0]])
    new = old + log_ratio
    loss, stats = losses.policy_loss(
        new, old, torch.tensor([[adv]]), torch.ones(1, 1), clip_eps=0.2
    )
    torch.testing.assert_close(loss, torch.tensor(expected_loss))
    assert stats["clipfrac"].item() == (1.0 if clipped else 0.0)
    torch.testing.assert_close(stats["ratio"], torch.tensor(math.exp(log_ratio)))


def _policy_batch():
    log_ratio = torch.tensor([[c[0] for c in POLICY_CASES]])
    adv = torch.tensor([[c[1] for c in POLICY_CASES]])
    old = torch.full_like(log_ratio, -2.0)
    return old + log_ratio, old, adv


def test_policy_loss_batch_mean_and_clipfrac():
    new, old, adv = _policy_batch()
    loss, stats = losses.policy_loss(new, old, adv, torch.ones_like(adv), clip_eps=0.2)
    # (-1.2 - 0.60653 + 1.64872 + 0.8 - 2.21034 + 1.80967) / 6 = 0.24152 / 6 = 0.040254
    torch.testing.assert_close(loss, torch.tensor(0.040254), atol=1e-5, rtol=0)
    # Cases 1 and 4 are clipped: 2 / 6.
    torch.testing.assert_close(stats["clipfrac"], torch.tensor(2 / 6))


def test_policy_loss_ignores_masked_positions():
    new, old, adv = _policy_batch()
    mask = torch.ones_like(adv)
    loss, stats = losses.policy_loss(new, old, adv, mask, clip_eps=0.2)
    # Append two padding tokens with a huge ratio (e^5) and huge advantages.
    new_p = torch.cat([new, torch.tensor([[3.0, 3.0]])], dim=1)
    old_p = torch.cat([old, torch.tensor([[-2.0, -2.0]])], dim=1)
    adv_p = torch.cat([adv, torch.tensor([[1e4, -1e4]])], dim=1)
    mask_p = torch.cat([mask, torch.zeros(1, 2)], dim=1)
    loss_p, stats_p = losses.policy_loss(new_p, old_p, adv_p, mask_p, clip_eps=0.2)
    torch.testing.assert_close(loss_p, loss)
    for key in ("clipfrac", "approx_kl", "ratio"):
        torch.testing.assert_close(stats_p[key], stats[key])


def test_approx_kl_zero_when_policy_unchanged():
    logp = torch.tensor([[-0.3, -1.7, -4.0]])
    adv = torch.tensor([[1.0, -2.0, 0.5]])
    loss, stats = losses.policy_loss(logp, logp.clone(), adv, torch.ones(1, 3), clip_eps=0.2)
    assert stats["approx_kl"].item() == 0.0
    assert stats["clipfrac"].item() == 0.0
    assert stats["ratio"].item() == 1.0
    # ratio = 1 everywhere, so loss = -mean(A) = -(1 - 2 + 0.5) / 3 = 0.5 / 3.
    torch.testing.assert_close(loss, torch.tensor(0.5 / 3))


def test_approx_kl_hand_value():
    # k3 = (r - 1) - log r: lr = 0.5 -> (1.64872 - 1) - 0.5 = 0.148721;
    #                       lr = -0.5 -> (0.60653 - 1) + 0.5 = 0.106531; mean = 0.127626.
    old = torch.tensor([[-1.0, -1.0]])
    new = old + torch.tensor([[0.5, -0.5]])
    _, stats = losses.policy_loss(new, old, torch.ones(1, 2), torch.ones(1, 2), clip_eps=0.2)
    torch.testing.assert_close(stats["approx_kl"], torch.tensor(0.127626), atol=1e-6, rtol=0)


def test_policy_loss_gradient_zero_where_clip_is_active():
    new, old, adv = _policy_batch()
    new = new.clone().requires_grad_(True)
    loss, stats = losses.policy_loss(new, old, adv, torch.ones_like(adv), clip_eps=0.2)
    loss.backward()
    # d/dlogp of -A * exp(logp - old) is -A * r, divided by the 6 tokens of the mean;
    # tokens 1 and 4 use the clipped (constant) branch, so their gradient is exactly 0.
    expected = torch.tensor([[0.0, -E_M05 / 6, E_05 / 6, 0.0, -2 * E_01 / 6, 2 * E_M01 / 6]])
    torch.testing.assert_close(new.grad, expected)
    assert new.grad[0, 0].item() == 0.0 and new.grad[0, 3].item() == 0.0
    assert not stats["clipfrac"].requires_grad and not stats["approx_kl"].requires_grad


# --- value_loss ----------------------------------------------------------------------------


def test_value_loss_unclipped_is_half_mse():
    values = torch.tensor([[1.0, 2.0, 3.0, 50.0]])
    returns = torch.tensor([[2.0, 2.0, 0.0, -50.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    # errors^2 = [1, 0, 9] (the padding's 100^2 is ignored): 0.5 * 10 / 3 = 5 / 3.
    loss, stats = losses.value_loss(values, values.clone(), returns, mask, value_clip_eps=None)
    torch.testing.assert_close(loss, torch.tensor(5 / 3))
    assert stats["clipfrac"].item() == 0.0


# value_clip_eps = 0.2. One token per case: (V, V_old, R).
#   a. V=1.0, V_old=0, R=1.0: plain (1 - 1)^2 = 0; clipped V = 0.2, (0.2 - 1)^2 = 0.64;
#      the clipped error is larger and used -> 0.5 * 0.64 = 0.32.
#   b. V=1.0, V_old=0, R=0.0: plain 1; clipped (0.2 - 0)^2 = 0.04 is smaller -> 0.5 * 1 = 0.5.
#   c. V=0.1, V_old=0, R=1.0: inside the clip, both (0.1 - 1)^2 = 0.81 -> 0.405.
#   d. V=0.0, V_old=1, R=0.0: plain 0; clipped V = 0.8, 0.64 is larger -> 0.32.
VALUE_CASES = [
    # (V, V_old, R, expected loss, clipped error used)
    (1.0, 0.0, 1.0, 0.32, True),
    (1.0, 0.0, 0.0, 0.5, False),
    (0.1, 0.0, 1.0, 0.405, False),
    (0.0, 1.0, 0.0, 0.32, True),
]


@pytest.mark.parametrize("v, v_old, r, expected_loss, clipped", VALUE_CASES)
def test_value_loss_clipped_single_token(v, v_old, r, expected_loss, clipped):
    loss, stats = losses.value_loss(
        torch.tensor([[v]]),
        torch.tensor([[v_old]]),
        torch.tensor([[r]]),
        torch.ones(1, 1),
        value_clip_eps=0.2,
    )
    torch.testing.assert_close(loss, torch.tensor(expected_loss))
    assert stats["clipfrac"].item() == (1.0 if clipped else 0.0)


def test_value_loss_clipped_batch_with_padding():
    values = torch.tensor([[c[0] for c in VALUE_CASES] + [9.0]])
    old_values = torch.tensor([[c[1] for c in VALUE_CASES] + [0.0]])
    returns = torch.tensor([[c[2] for c in VALUE_CASES] + [-9.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 1.0, 0.0]])
    loss, stats = losses.value_loss(values, old_values, returns, mask, value_clip_eps=0.2)
    # 0.5 * (0.64 + 1 + 0.81 + 0.64) / 4 = 0.5 * 3.09 / 4 = 0.38625; clipfrac = 2 / 4.
    torch.testing.assert_close(loss, torch.tensor(0.38625))
    torch.testing.assert_close(stats["clipfrac"], torch.tensor(0.5))


# --- entropy_from_logits -------------------------------------------------------------------


def test_entropy_uniform_is_log_v():
    for v in (2, 5, 50):
        h = losses.entropy_from_logits(torch.full((2, 3, v), 0.7))
        assert h.shape == (2, 3)
        torch.testing.assert_close(h, torch.full((2, 3), math.log(v)))


def test_entropy_peaked_is_about_zero():
    logits = torch.tensor([[[100.0, 0.0, 0.0, 0.0]]])
    h = losses.entropy_from_logits(logits)
    assert h.shape == (1, 1)
    assert 0.0 <= h.item() < 1e-6


def test_entropy_two_class_by_hand():
    # logits [0, ln 3] -> p = [1/4, 3/4];
    # H = 0.25 * ln 4 + 0.75 * ln(4/3) = 0.346574 + 0.215762 = 0.562335.
    h = losses.entropy_from_logits(torch.tensor([[[0.0, math.log(3.0)]]]))
    torch.testing.assert_close(h, torch.tensor([[0.562335]]), atol=1e-6, rtol=0)


# --- kl_penalty ----------------------------------------------------------------------------


def test_kl_penalty_hand_values():
    logp = torch.tensor([-1.0, -2.0, -0.5])
    ref = torch.tensor([-2.0, -1.0, -0.5])
    # k1 = logp - ref = [1, -1, 0].
    torch.testing.assert_close(losses.kl_penalty(logp, ref, "k1"), torch.tensor([1.0, -1.0, 0.0]))
    # k3 = (e^{ref - logp} - 1) - (ref - logp):
    #   token 0: ref - logp = -1 -> (e^-1 - 1) + 1 = e^-1 = 0.367879
    #   token 1: ref - logp = +1 -> (e - 1) - 1 = e - 2 = 0.718282
    #   token 2: 0 -> 0
    torch.testing.assert_close(
        losses.kl_penalty(logp, ref, "k3"), torch.tensor([0.367879, 0.718282, 0.0])
    )


def test_kl_penalty_k3_is_nonnegative():
    gen = torch.Generator().manual_seed(0)
    logp = -5 * torch.rand(64, 32, generator=gen)
    ref = -5 * torch.rand(64, 32, generator=gen)
    assert (losses.kl_penalty(logp, ref, "k3") >= 0).all()


def test_kl_penalty_estimators_are_unbiased_monte_carlo():
    # Policy p = [0.5, 0.3, 0.2], reference q = [0.2, 0.3, 0.5].
    # KL(p || q) = 0.5 ln 2.5 + 0.3 ln 1 + 0.2 ln 0.4 = (0.5 - 0.2) * 0.916291 = 0.274887.
    p = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    q = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)
    true_kl = 0.274887
    torch.testing.assert_close((p * (p / q).log()).sum().item(), true_kl, atol=1e-6, rtol=0)

    gen = torch.Generator().manual_seed(1234)
    tokens = torch.multinomial(p, 200_000, replacement=True, generator=gen)
    logp, ref = p.log()[tokens], q.log()[tokens]
    k1 = losses.kl_penalty(logp, ref, "k1").mean().item()
    k3 = losses.kl_penalty(logp, ref, "k3").mean().item()
    assert abs(k1 - true_kl) < 0.02
    assert abs(k3 - true_kl) < 0.02


def test_kl_penalty_bad_estimator_raises():
    with pytest.raises(ValueError, match="kl_estimator"):
        losses.kl_penalty(torch.zeros(2), torch.zeros(2), "k2")


# --- explained_variance --------------------------------------------------------------------


def test_explained_variance_perfect_critic_is_one():
    returns = torch.tensor([[1.0, 2.0, 3.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    assert losses.explained_variance(returns.clone(), returns, mask) == pytest.approx(1.0)


def test_explained_variance_constant_mean_critic_is_zero():
    returns = torch.tensor([[1.0, 2.0, 3.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    values = torch.full_like(returns, 2.0)  # the mean of the valid returns
    assert losses.explained_variance(values, returns, mask) == pytest.approx(0.0, abs=1e-6)


def test_explained_variance_hand_case():
    # R = [1, 2, 3], V = [1, 2, 2]: R - V = [0, 0, 1], mean 1/3,
    # unbiased var = ((1/3)^2 + (1/3)^2 + (2/3)^2) / 2 = (6/9) / 2 = 1/3; Var(R) = 2 / 2 = 1.
    # EV = 1 - (1/3) / 1 = 2/3. The padded entry (V = 99) is ignored.
    returns = torch.tensor([[1.0, 2.0, 3.0, 0.0]])
    values = torch.tensor([[1.0, 2.0, 2.0, 99.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    assert losses.explained_variance(values, returns, mask) == pytest.approx(2 / 3)


def test_explained_variance_constant_returns_is_nan():
    returns = torch.full((1, 3), 5.0)
    assert math.isnan(losses.explained_variance(torch.zeros(1, 3), returns, torch.ones(1, 3)))


# --- logprobs_from_logits ------------------------------------------------------------------


def test_logprobs_from_logits_by_hand():
    # Position 0: logits [0, 0, 0] -> p = 1/3 each; token 1 -> ln(1/3) = -1.098612.
    # Position 1: logits [0, ln 2, ln 3] -> exp = [1, 2, 3], p = [1/6, 1/3, 1/2];
    #             token 2 -> ln 0.5 = -0.693147.
    # Position 2: same logits, token 0 -> ln(1/6) = -1.791759.
    logits = torch.tensor(
        [
            [
                [0.0, 0.0, 0.0],
                [0.0, math.log(2.0), math.log(3.0)],
                [0.0, math.log(2.0), math.log(3.0)],
            ]
        ]
    )
    tokens = torch.tensor([[1, 2, 0]])
    lp = losses.logprobs_from_logits(logits, tokens)
    assert lp.shape == (1, 3)
    torch.testing.assert_close(lp, torch.tensor([[-1.098612, -0.693147, -1.791759]]))


# --- truncate_after_stop -------------------------------------------------------------------


def test_truncate_after_stop():
    stop = 2
    response = torch.tensor(
        [
            [5, 2, 7, 2],  # stop in the middle: keep up to and including it
            [2, 5, 6, 7],  # stop at position 0: only the stop token is kept
            [5, 6, 7, 8],  # no stop: everything kept
            [5, 6, 7, 2],  # stop on the last token
        ]
    )
    mask, has_stop = truncate_after_stop(response, stop)
    expected = torch.tensor(
        [
            [1.0, 1.0, 0.0, 0.0],
            [1.0, 0.0, 0.0, 0.0],
            [1.0, 1.0, 1.0, 1.0],
            [1.0, 1.0, 1.0, 1.0],
        ]
    )
    assert mask.dtype == torch.float32
    assert torch.equal(mask, expected)
    assert has_stop.tolist() == [True, True, False, True]


# --- logprobs_and_entropy ------------------------------------------------------------------


def test_logprobs_and_entropy_are_exactly_the_separate_functions():
    torch.manual_seed(0)
    logits = torch.randn(3, 5, 40, requires_grad=True)
    tokens = torch.randint(40, (3, 5))
    lp, h = losses.logprobs_and_entropy(logits, tokens, temperature=0.7, entropy_grad=False)
    assert torch.equal(lp, losses.logprobs_from_logits(logits / 0.7, tokens))
    assert torch.equal(h, losses.entropy_from_logits(logits / 0.7))
    assert lp.requires_grad and not h.requires_grad  # entropy only as a statistic


def test_logprobs_and_entropy_backpropagates_the_entropy_when_asked():
    logits = torch.tensor([[[0.0, math.log(3.0)]]], requires_grad=True)
    _, h = losses.logprobs_and_entropy(logits, torch.tensor([[1]]), temperature=1.0,
                                       entropy_grad=True)
    torch.testing.assert_close(h, torch.tensor([[0.562335]]), atol=1e-6, rtol=0)
    h.sum().backward()
    # dH/dz_i = -p_i (log p_i + H): p = [1/4, 3/4], log p = [-1.386294, -0.287682];
    # -> [-0.25 * (-0.823959), -0.75 * (0.274653)] = [0.205990, -0.205990].
    torch.testing.assert_close(logits.grad, torch.tensor([[[0.205990, -0.205990]]]),
                               atol=1e-6, rtol=0)


def test_losses_over_real_tokens_alone_equal_the_masked_ones():
    # the packed update passes (n,) tensors of real tokens with mask=None
    g = torch.Generator().manual_seed(0)
    new, old, adv, values, old_values, returns = (torch.randn(3, 5, generator=g) for _ in range(6))
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.float32)
    real = mask.bool()
    masked = losses.policy_loss(new, old, adv, mask, clip_eps=0.2)
    alone = losses.policy_loss(new[real], old[real], adv[real], None, clip_eps=0.2)
    assert torch.allclose(masked[0], alone[0])
    for key in masked[1]:
        assert torch.allclose(masked[1][key], alone[1][key]), key
    masked = losses.value_loss(values, old_values, returns, mask, value_clip_eps=0.2)
    alone = losses.value_loss(values[real], old_values[real], returns[real], None,
                              value_clip_eps=0.2)
    assert torch.allclose(masked[0], alone[0]) and torch.allclose(masked[1]["clipfrac"],
                                                                   alone[1]["clipfrac"])
    assert losses.masked_mean(values[real], None) == pytest.approx(
        float(losses.masked_mean(values, mask)))
