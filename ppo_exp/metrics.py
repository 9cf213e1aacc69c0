"""The names of every metric the trainer logs (documented in the README's metric table).

`objective` and a study's objectives must be one of `METRICS`, so a typo fails before
training, not after; a test compares the list with what a real run logs.
"""

from __future__ import annotations

# Every metric the trainer logs starts with one of these.
METRIC_PREFIXES = ("rollout/", "policy/", "value/", "loss/", "perf/", "eval/", "data/")
METRICS = (
    *(f"rollout/{m}" for m in ("reward_mean", "reward_std", "kl", "kl_coef", "entropy")),
    *(f"rollout/{m}" for m in ("response_length", "eos_rate", "rlhf_reward")),
    "rollout/penalized_reward_mean",  # after missing_eos_penalty; reward_mean is before it
    *(f"policy/{m}" for m in ("approx_kl", "clipfrac", "ratio", "entropy", "epochs", "lr")),
    "policy/skipped_minibatches",  # steps skipped on a non-finite loss or gradient
    "value/explained_var",
    "value/clipfrac",
    *(f"loss/{m}" for m in ("policy", "value", "entropy", "total")),
    *(f"perf/{m}" for m in ("rollout_s", "update_s", "tokens_per_s")),
    *(f"eval/{m}" for m in ("reward_mean", "reward_std", "kl", "response_length")),
    "eval/penalized_reward_mean",
    *(f"eval/{m}" for m in ("score", "score_auc", "reward_auc")),
    "eval/gold_mean",  # the gold scorer (reward.gold) on the held-out responses: only with
    "eval/gold_std",  # reward.gold set
    *(f"data/{m}" for m in ("prompts_train", "prompts_eval", "prompts_dropped")),
    "data/prompt_tokens_max",
)
