"""`PPOConfig`: every PPO hyperparameter as one flat key, its ranges, and how a composed
Hydra config becomes one (`to_config`) and is logged (`mlflow_params`)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from omegaconf import DictConfig, OmegaConf

from ppo_exp.config.sections import (
    DataConfig,
    MlflowConfig,
    ModelConfig,
    RewardConfig,
    TrialConfig,
)
from ppo_exp.config.validation import (
    at_least,
    check,
    finite,
    non_negative,
    one_of,
    positive,
    within,
)
from ppo_exp.metrics import METRICS


@dataclass
class PPOConfig:
    # --- GAE (gae/): how the end-of-response reward is spread back over tokens
    gamma: float = 1.0  # discount per token, in [0, 1]; 1 = no discount (TRL's default)
    lam: float = 0.95  # GAE lambda, in [0, 1]; 0 = one-step TD, 1 = Monte-Carlo returns
    whiten_advantages: bool = True  # normalise advantages over valid tokens (mean 0, std 1)

    # --- clipping (clip/): how far one batch may move the policy and the critic
    clip_eps: float = 0.2  # PPO ratio clip: ratio kept in [1-clip_eps, 1+clip_eps]; > 0
    value_clip_eps: float | None = 0.2  # critic clip around the rollout values; null = off
    max_grad_norm: float | None = 1.0  # global gradient-norm clip; null = off
    target_kl: float | None = None  # stop the replay epochs once approx-KL exceeds it; null = off

    # --- guards (ppo/guards.py): what happens when the numbers go wrong
    on_nonfinite: str = "stop"  # a NaN/inf loss or gradient norm: "stop" the run (naming the
    # iteration and quantity) | "skip" that minibatch's step. A non-finite rollout always stops
    max_approx_kl: float | None = 1.0  # approx-KL per token above this, `divergence_patience`
    # iterations in a row, is divergence (healthy: 0.001-0.05); null = no check
    divergence_patience: int = 3  # iterations in a row beyond max_approx_kl before acting
    on_divergence: str = "warn"  # "warn" (a log line) | "fail" (the run fails with the reason)

    # --- loss (loss/): the three-part loss and the KL penalty in the reward
    vf_coef: float = 0.1  # weight of the value (critic) loss. Adam cancels a constant weight
    # on parameters of their own, so it acts on the critic's step: the critic (its trunk
    # when "separate", and the value head) steps with lr vf_coef * vf_lr. With "shared" it
    # also weights the value loss's gradient against the policy's in the common trunk.
    vf_lr: float = 1e-3  # critic learning rate before vf_coef (default: 0.1 * 1e-3 = 1e-4)
    ent_coef: float = 0.0  # weight of the entropy bonus; 0 = off (fragile in RLHF)
    kl_coef: float = 0.05  # initial per-token KL penalty to the reference model; 0 = off
    kl_estimator: str = "k1"  # "k1": logp - logp_ref (unbiased); "k3": always >= 0, lower variance
    kl_target: float | None = None  # adaptive KL controller target (nats/response); null = fixed
    kl_horizon: int | None = None  # adaptive controller horizon in rollouts (Ziegler et al.
    # 2019); null = a tenth of the run's rollouts, so the coefficient can move up to e^±2
    # over the run (a fixed 10000 moves it by ±4% over a 1920-rollout run)
    missing_eos_penalty: float | None = (
        None  # subtracted from scores lacking a stop token; null = off
    )
    whiten_rewards: bool = False  # scale per-token rewards to unit variance over valid tokens

    # --- optimiser (optim/): AdamW over policy and critic, and the replay schedule
    lr: float = 1e-4  # AdamW learning rate; > 0
    lr_decay: bool = False  # decay lr linearly from lr at the first update to 0 at the last
    adam_eps: float = 1e-5  # AdamW epsilon (CleanRL's value)
    ppo_epochs: int = 4  # replay count: passes over each rollout batch; >= 1
    num_minibatches: int = 4  # minibatches per pass; must divide batch_size

    # --- training loop (train/): sizes and budget
    iterations: int = 30  # PPO iterations (rollout + update) in the run
    batch_size: int = 64  # responses sampled per iteration
    max_new_tokens: int = 24  # response length cap, tokens
    temperature: float = 0.7  # sampling temperature; log-probs are divided by it too
    eval_every: int = 10  # held-out eval every N iterations (and after the last); 0 = last only
    eval_prompts: int = 128  # held-out prompts per eval
    sample_every: int = 10  # log a table of sample generations every N iterations; 0 = off
    seed: int = 0  # seeds torch, python and the prompt order; same seed = same metrics
    stop_tokens: list[str] | None = None  # tokens that end a response; null = the tokenizer's
    # eos plus the checkpoint's generation_config.eos_token_id list
    micro_batch_size: int | None = None  # rows per forward/backward inside a minibatch, with
    # the gradients accumulated: one optimiser step per minibatch as before; null = whole
    rollout_micro_batch: int | None = None  # rows per rollout forward pass; null = batch_size
    # (the held-out eval's eval_prompts rows also go batch_size at a time: same metrics)
    objective: str = "eval/reward_mean"  # metric returned to sweepers (last logged value)
    compile: bool = False  # torch.compile the policy/critic forward of the update (dynamic
    # shapes: compiled once per run, about a minute of CPU for the tiny model, then every
    # minibatch runs the compiled kernels; same losses up to float rounding); false = eager
    pack_minibatches: bool = True  # the update runs each micro-batch's real tokens packed
    # into a few sequences (no padding; transformers' packed-sequence attention), each of
    # about half the hidden size or the longest row; same losses up to float rounding.
    # false = padded rows, trimmed to the micro-batch's longest response
    checkpoint_every: int | None = None  # save a checkpoint every N iterations into the job
    # dir's checkpoints/ (ppo/checkpoint.py), and always after the last; null or 0 = the last only
    resume: str | None = None  # continue a run: a checkpoint folder or a job dir (its newest
    # checkpoint), or "auto" (this job dir's newest, else a fresh start); null = fresh start.
    # The config must match the checkpoint's but for budget keys (checkpoint.BUDGET_KEYS)
    threads: int | None = None  # torch intra-op threads of this job, set before any tensor
    # work; null = $OMP_NUM_THREADS if set, else the CPU cores available to the job / the
    # jobs its launch runs at once on that machine (ppo_exp/resources.py)

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    mlflow: MlflowConfig = field(default_factory=MlflowConfig)
    optuna: TrialConfig = field(default_factory=TrialConfig)

    def __post_init__(self) -> None:
        validate(self)


def validate(cfg: PPOConfig) -> None:
    """Raise `ConfigError` for the first setting out of range (called on every load)."""
    for key in ("gamma", "lam"):
        within(cfg, key, 0, 1)
    positive(cfg, "clip_eps")
    positive(cfg, "value_clip_eps", "max_grad_norm", "target_kl", "kl_target", nullable=True)
    non_negative(cfg, "vf_coef", "ent_coef", "kl_coef")
    check(cfg.kl_estimator in ("k1", "k3"), "kl_estimator", cfg.kl_estimator, "'k1' or 'k3'")
    one_of(cfg, "on_nonfinite", ("stop", "skip"))
    one_of(cfg, "on_divergence", ("warn", "fail"))
    positive(cfg, "max_approx_kl", nullable=True)
    at_least(cfg, "divergence_patience")
    at_least(cfg, "kl_horizon", "micro_batch_size", "rollout_micro_batch", "threads",
             nullable=True)
    positive(cfg, "vf_lr", "lr", "adam_eps", "temperature")
    check(
        cfg.missing_eos_penalty is None or finite(cfg.missing_eos_penalty),
        "missing_eos_penalty", cfg.missing_eos_penalty, "a number, or null",
    )
    at_least(cfg, "ppo_epochs", "num_minibatches", "iterations", "batch_size", "max_new_tokens")
    check(
        cfg.batch_size % cfg.num_minibatches == 0, "num_minibatches", cfg.num_minibatches,
        f"a divisor of batch_size={cfg.batch_size}",
    )
    for key in ("eval_every", "sample_every"):
        value = getattr(cfg, key)
        check(value >= 0, key, value, "an integer >= 0 (0 = only at the end / off)")
    check(
        cfg.checkpoint_every is None or cfg.checkpoint_every >= 0, "checkpoint_every",
        cfg.checkpoint_every, "an integer >= 0, or null (0 and null: after the last only)",
    )
    check(cfg.resume is None or bool(cfg.resume), "resume", cfg.resume,
          "a checkpoint folder, a job dir, auto, or null")
    at_least(cfg, "eval_prompts")
    check(0 <= cfg.seed < 2**32, "seed", cfg.seed, "an integer in [0, 2**32 - 1]")
    check(
        cfg.objective in METRICS, "objective", cfg.objective,
        "a metric the trainer logs: " + ", ".join(METRICS),
    )
    check(
        not cfg.objective.startswith("eval/gold_") or cfg.reward.gold is not None,
        "objective", cfg.objective,
        "eval/gold_* only with a gold scorer: +reward@reward.gold=vader",
    )
    check(
        not (cfg.pack_minibatches and cfg.compile), "compile", cfg.compile,
        "false while pack_minibatches=true, the default (the packed forward is not "
        "compiled): set pack_minibatches=false to compile the padded one",
    )
    check(
        cfg.stop_tokens is None or (len(cfg.stop_tokens) > 0 and all(cfg.stop_tokens)),
        "stop_tokens", cfg.stop_tokens, "a non-empty list of tokens, or null",
    )


def mlflow_params(cfg: PPOConfig) -> dict[str, object]:
    """The flat settings logged as MLflow params: top-level scalars, plus model and reward names."""
    params = {f.name: getattr(cfg, f.name) for f in fields(cfg) if f.name not in _SECTIONS}
    params["model"] = cfg.model.name or cfg.model.path
    params["reward"] = _reward_name(cfg.reward)
    if cfg.reward.gold is not None:
        params["gold"] = _reward_name(cfg.reward.gold)
    params["data"] = cfg.data.name or cfg.data.path
    return params


# not hyperparameters: sections, and settings of how a job runs rather than what it trains
_SECTIONS = ("model", "data", "reward", "mlflow", "optuna", "threads", "checkpoint_every", "resume")


def _reward_name(reward: RewardConfig) -> str | None:
    return reward.name or reward.function or reward.path


def to_config(cfg: DictConfig) -> PPOConfig:
    """Turn a composed Hydra config into a validated `PPOConfig` (raises `ConfigError`).

    The schema is closed: a key it does not have (`+clip_epsilon=0.1`) is refused.
    """
    from ppo_exp.checks import closed_keys

    closed_keys({k: v for k, v in cfg.items() if k != "hydra"}, PPOConfig)
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(PPOConfig), cfg))


def preflight(cfg: PPOConfig) -> None:
    """Checks that look outside the config, run once before any model loads.

    Files and imports the settings name, the tracking store; all cheap (no torch, no
    model weights). Raises `ConfigError`. Add new checks of that kind here.
    """
    from ppo_exp import checks, locations

    locations.check_paths(cfg)
    for reward in (cfg.reward, cfg.reward.gold):
        if reward is not None and reward.kind == "function":
            checks.import_function(reward.function)
    locations.check_tracking_uri(locations.effective_tracking_uri(cfg.mlflow.tracking_uri))
