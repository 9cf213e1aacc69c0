"""Typed run configuration: one flat name per PPO hyperparameter, validated on load.

Every hyperparameter is a top-level key, so the same name is the Hydra override
(`clip_eps=0.1`), the Optuna parameter, the MLflow param and the pandas column
(`params.clip_eps`). The config groups in `conf/` (gae/, clip/, loss/, optim/,
train/) are named presets over these keys. Each setting is documented here, once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

REWARD_KINDS = ("vader", "function", "classifier")  # see ppo_exp/task/rewards.py
# Every metric the trainer logs starts with one of these (documented in the README).
METRIC_PREFIXES = ("rollout/", "policy/", "value/", "loss/", "perf/", "eval/", "data/")
# Every metric the trainer logs (a test compares this with a real run): `objective` and a
# study's objectives must be one of them, so a typo fails before training, not after.
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


class ConfigError(ValueError):
    """A setting is out of range: the message names the key, the value and what is accepted."""

    def __init__(self, key: str, value: object, accepted: str):
        super().__init__(f"invalid config: {key}={value!r}; accepted: {accepted}")
        self.key, self.value, self.accepted = key, value, accepted


@dataclass
class LoraSettings:
    r: int = 16  # adapter rank; >= 1
    alpha: float = 32.0  # scaling numerator: the update is (alpha / r) * B @ A
    dropout: float = 0.0  # dropout on the adapter input, in [0, 1); 0 keeps ratios exact
    # module names (suffixes) to adapt; "all-linear" = every linear layer but the LM head
    target_modules: list[str] = field(default_factory=lambda: ["all-linear"])


@dataclass
class ModelConfig:
    name: str | None = "tiny-reviews"  # logged as the MLflow param `model`; null = `path`
    path: str | None = None  # HF hub id or local dir; None = the embedded tiny review model
    value_model: str = "separate"  # "separate": critic trunk copied from the policy checkpoint;
    # "shared": a value head on the policy's own trunk (half the memory, coupled gradients);
    # or a checkpoint dir/hub id whose trunk starts the critic (e.g. the reward model's)
    device: str = "auto"  # "auto" (CUDA when available, else CPU) | "cpu" | "cuda" | "cuda:N"
    dtype: str = "auto"  # compute precision: "auto" (bf16 on a GPU with it, else float32) |
    # "float32" | "bfloat16" | "float16"; trained weights stay float32 (see ppo/hardware.py)
    lora: LoraSettings | None = None  # LoRA adapters (`lora=default`); null = full fine-tuning
    gradient_checkpointing: bool = False  # recompute activations in backward: less memory

    def __post_init__(self) -> None:
        validate_model(self)


@dataclass
class DataConfig:
    name: str | None = "reviews"  # logged as the MLflow param `data`; null = `path`
    kind: str = "reviews"  # "reviews": the embedded review openings | "hf": a `datasets` source
    path: str | None = None  # kind=hf: hub dataset name, a local .jsonl/.json/.csv/.parquet/
    # .arrow file (or glob), a directory of such files (splits from file names), or a
    # directory written by `save_to_disk`
    subset: str | None = None  # kind=hf: the hub dataset's configuration name
    prompt_column: str = "prompt"  # kind=hf: column of plain-text prompts
    messages_column: str | None = None  # kind=hf: column of chat messages [{role, content}]
    # used instead of prompt_column when set; a trailing assistant turn is dropped
    train_split: str = "train"  # kind=hf: split the rollout prompts come from
    eval_split: str | None = None  # kind=hf: held-out split; null = hold out eval_fraction
    eval_fraction: float = 0.1  # kind=hf, eval_split=null: share of train held out, in (0, 1)
    max_prompt_tokens: int | None = None  # drop longer prompts (counted: data/prompts_dropped);
    # null = keep all. Checked with max_new_tokens against the model's positions
    chat_template: str = "auto"  # "auto": the tokenizer's chat template if it has one, with
    # the generation prompt | "true": required | "false": raw text

    def __post_init__(self) -> None:
        validate_data(self)


@dataclass
class RewardConfig:
    name: str | None = "vader"  # logged as the MLflow param `reward`; null = function or path
    kind: str = "vader"  # one of REWARD_KINDS: "vader" | "function" | "classifier"
    function: str | None = None  # kind=function: "module:function", list[str] -> list[float]
    path: str | None = None  # kind=classifier: HF sequence-classification dir or hub id
    label: int = 1  # kind=classifier: index of the class whose logit is the score
    text: str = "response"  # what is scored: "response", or "full" (prompt + response)
    # A second scorer, never trained on: measured on the held-out prompts at every eval
    # as `eval/gold_mean` (e.g. VADER while PPO trains on a learned proxy); null = none.
    # Any scorer the reward group accepts: `+reward@reward.gold=vader`.
    gold: GoldConfig | None = None

    def __post_init__(self) -> None:
        validate_reward(self)


@dataclass
class GoldConfig(RewardConfig):
    """`reward.gold`: the same settings as `reward` (errors name `reward.gold.*`)."""

    def __post_init__(self) -> None:
        validate_reward(self, "reward.gold")
        _check(self.gold is None, "reward.gold.gold", self.gold, "null: a gold has no gold")


@dataclass
class MlflowConfig:
    tracking_uri: str | None = None  # None: $MLFLOW_TRACKING_URI, else MLflow's sqlite:///mlflow.db
    experiment: str = "ppo_exp"  # MLflow experiment that holds the runs
    log_model: bool = True  # log the final policy (checkpoint's policy/ folder) as the run's
    # artifact `policy/`; studies turn it off (conf/study_base.yaml): a trial's is in its job dir


@dataclass
class TrialConfig:
    """The Optuna trial a training job belongs to, set by the study sweeper as overrides.

    The job opens the storage itself, reports its objective there at every held-out eval
    and asks it whether to prune (Optuna's pattern for distributed trials); the sweeper
    tells Optuna the result. Nothing else carries the trial, so a job behaves the same
    in-process, in a joblib worker, a SLURM job or a Ray worker. Never set by hand.
    """

    study: str | None = None  # study name; null = an ordinary run, not part of a study
    storage: str | None = None  # Optuna storage URL (local files as absolute paths)
    trial: int | None = None  # trial number (names the run)
    trial_id: int | None = None  # the storage's id of the trial (reports go there)
    seed_index: int = 0  # index in the trial's seeds: steps reported to Optuna are offset
    # by seed_index * (iterations + 1), so a trial's seeds form one growing curve
    objectives: list[str] = field(default_factory=list)  # metrics the job returns, in order
    parent_run_id: str | None = None  # the trial's MLflow run: this job's run is its child


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


def _check(ok: bool, key: str, value: object, accepted: str) -> None:
    if not ok:
        raise ConfigError(key, value, accepted)


def _finite(x: float) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def validate(cfg: PPOConfig) -> None:
    """Raise `ConfigError` for the first setting out of range (called on every load)."""
    for key in ("gamma", "lam"):
        value = getattr(cfg, key)
        _check(_finite(value) and 0 <= value <= 1, key, value, "a number in [0, 1]")
    _check(_finite(cfg.clip_eps) and cfg.clip_eps > 0, "clip_eps", cfg.clip_eps, "a number > 0")
    for key in ("value_clip_eps", "max_grad_norm", "target_kl", "kl_target"):
        value = getattr(cfg, key)
        _check(value is None or (_finite(value) and value > 0), key, value, "a number > 0, or null")
    for key in ("vf_coef", "ent_coef", "kl_coef"):
        value = getattr(cfg, key)
        _check(_finite(value) and value >= 0, key, value, "a number >= 0")
    _check(cfg.kl_estimator in ("k1", "k3"), "kl_estimator", cfg.kl_estimator, "'k1' or 'k3'")
    _check(cfg.on_nonfinite in ("stop", "skip"), "on_nonfinite", cfg.on_nonfinite, "stop | skip")
    _check(cfg.on_divergence in ("warn", "fail"), "on_divergence", cfg.on_divergence, "warn | fail")
    _check(
        cfg.max_approx_kl is None or (_finite(cfg.max_approx_kl) and cfg.max_approx_kl > 0),
        "max_approx_kl", cfg.max_approx_kl, "a number > 0, or null",
    )
    _check(
        cfg.divergence_patience >= 1, "divergence_patience", cfg.divergence_patience,
        "an integer >= 1",
    )
    _check(
        cfg.kl_horizon is None or cfg.kl_horizon >= 1,
        "kl_horizon", cfg.kl_horizon, "an integer >= 1, or null",
    )
    _check(_finite(cfg.vf_lr) and cfg.vf_lr > 0, "vf_lr", cfg.vf_lr, "a number > 0")
    _check(
        cfg.missing_eos_penalty is None or _finite(cfg.missing_eos_penalty),
        "missing_eos_penalty",
        cfg.missing_eos_penalty,
        "a number, or null",
    )
    _check(_finite(cfg.lr) and cfg.lr > 0, "lr", cfg.lr, "a number > 0")
    _check(_finite(cfg.adam_eps) and cfg.adam_eps > 0, "adam_eps", cfg.adam_eps, "a number > 0")
    for key in ("ppo_epochs", "num_minibatches", "iterations", "batch_size", "max_new_tokens"):
        value = getattr(cfg, key)
        _check(value >= 1, key, value, "an integer >= 1")
    _check(
        cfg.batch_size % cfg.num_minibatches == 0,
        "num_minibatches",
        cfg.num_minibatches,
        f"a divisor of batch_size={cfg.batch_size}",
    )
    _check(
        _finite(cfg.temperature) and cfg.temperature > 0,
        "temperature",
        cfg.temperature,
        "a number > 0",
    )
    for key in ("eval_every", "sample_every"):
        value = getattr(cfg, key)
        _check(value >= 0, key, value, "an integer >= 0 (0 = only at the end / off)")
    _check(
        cfg.checkpoint_every is None or cfg.checkpoint_every >= 0, "checkpoint_every",
        cfg.checkpoint_every, "an integer >= 0, or null (0 and null: after the last only)",
    )
    _check(cfg.resume is None or bool(cfg.resume), "resume", cfg.resume,
           "a checkpoint folder, a job dir, auto, or null")
    _check(
        cfg.threads is None or cfg.threads >= 1, "threads", cfg.threads, "an integer >= 1, or null"
    )
    _check(cfg.eval_prompts >= 1, "eval_prompts", cfg.eval_prompts, "an integer >= 1")
    _check(0 <= cfg.seed < 2**32, "seed", cfg.seed, "an integer in [0, 2**32 - 1]")
    _check(
        cfg.objective in METRICS,
        "objective",
        cfg.objective,
        "a metric the trainer logs: " + ", ".join(METRICS),
    )
    _check(
        not cfg.objective.startswith("eval/gold_") or cfg.reward.gold is not None,
        "objective",
        cfg.objective,
        "eval/gold_* only with a gold scorer: +reward@reward.gold=vader",
    )
    for key in ("micro_batch_size", "rollout_micro_batch"):
        value = getattr(cfg, key)
        _check(value is None or value >= 1, key, value, "an integer >= 1, or null")
    _check(
        cfg.stop_tokens is None or (len(cfg.stop_tokens) > 0 and all(cfg.stop_tokens)),
        "stop_tokens", cfg.stop_tokens, "a non-empty list of tokens, or null",
    )


def validate_reward(cfg: RewardConfig, prefix: str = "reward") -> None:
    """Raise `ConfigError` for a reward setting out of range (on every RewardConfig).

    `prefix` names the section in the message: "reward", or "reward.gold".
    """
    _check(cfg.kind in REWARD_KINDS, f"{prefix}.kind", cfg.kind, " | ".join(REWARD_KINDS))
    _check(
        cfg.kind != "function" or (cfg.function or "").count(":") == 1,
        f"{prefix}.function",
        cfg.function,
        "'module:function' when reward.kind=function",
    )
    _check(
        cfg.kind != "classifier" or bool(cfg.path),
        f"{prefix}.path",
        cfg.path,
        "a model dir or hub id when reward.kind=classifier",
    )
    _check(
        cfg.text in ("response", "full"),
        f"{prefix}.text",
        cfg.text,
        "'response' or 'full'",
    )


def validate_model(model: ModelConfig) -> None:
    """The model section's static checks (files and devices are checked by `preflight`)."""
    _check(
        model.value_model in ("separate", "shared") or bool(model.value_model),
        "model.value_model", model.value_model, "'separate', 'shared' or a checkpoint path",
    )
    _check(
        model.device == "auto" or model.device.split(":")[0] in ("cpu", "cuda"),
        "model.device", model.device, "auto, cpu, cuda or cuda:N",
    )
    dtypes = ("auto", "float32", "bfloat16", "float16")
    _check(model.dtype in dtypes, "model.dtype", model.dtype, " | ".join(dtypes))
    if model.lora is not None:
        lora = model.lora
        _check(lora.r >= 1, "model.lora.r", lora.r, "an integer >= 1")
        _check(_finite(lora.alpha) and lora.alpha > 0, "model.lora.alpha", lora.alpha, "> 0")
        _check(
            _finite(lora.dropout) and 0 <= lora.dropout < 1,
            "model.lora.dropout", lora.dropout, "a number in [0, 1)",
        )
        _check(
            len(lora.target_modules) > 0 and all(lora.target_modules),
            "model.lora.target_modules", lora.target_modules,
            "a non-empty list of module names, or ['all-linear']",
        )


def validate_data(data: DataConfig) -> None:
    """The data section's static checks (paths and token counts are checked by `preflight`)."""
    _check(data.kind in ("reviews", "hf"), "data.kind", data.kind, "'reviews' or 'hf'")
    _check(
        data.kind != "hf" or bool(data.path),
        "data.path", data.path, "a hub dataset name or local data files when data.kind=hf",
    )
    _check(
        _finite(data.eval_fraction) and 0 < data.eval_fraction < 1,
        "data.eval_fraction", data.eval_fraction, "a number in (0, 1)",
    )
    _check(
        data.max_prompt_tokens is None or data.max_prompt_tokens >= 1,
        "data.max_prompt_tokens", data.max_prompt_tokens, "an integer >= 1, or null",
    )
    _check(
        str(data.chat_template).lower() in ("auto", "true", "false"),
        "data.chat_template", data.chat_template, "auto | true | false",
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
    from ppo_exp import checks

    checks.check_paths(cfg)
    for reward in (cfg.reward, cfg.reward.gold):
        if reward is not None and reward.kind == "function":
            checks.import_function(reward.function)
    checks.check_tracking_uri(checks.effective_tracking_uri(cfg.mlflow.tracking_uri))


ConfigStore.instance().store(name="ppo_schema", node=PPOConfig)
