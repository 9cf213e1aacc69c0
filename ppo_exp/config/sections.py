"""The sections of the run config: model, data, reward (and its gold), MLflow and the
Optuna trial a job belongs to. Each validates itself on construction."""

from __future__ import annotations

from dataclasses import dataclass, field

from ppo_exp.config.validation import at_least, check, one_of, positive, within

REWARD_KINDS = ("vader", "function", "classifier")  # see ppo_exp/task/rewards.py


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
    # How a classifier reads it: "text" (decoded, then re-tokenised by its own tokenizer:
    # any classifier), or "tokens" (the policy's token ids as sampled, never decoded: the
    # classifier must have the policy's tokenizer; what TRL does, and cheaper).
    input: str = "text"
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
        check(self.gold is None, "reward.gold.gold", self.gold, "null: a gold has no gold")


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


def validate_reward(cfg: RewardConfig, prefix: str = "reward") -> None:
    """Raise `ConfigError` for a reward setting out of range (on every RewardConfig).

    `prefix` names the section in the message: "reward", or "reward.gold".
    """
    one_of(cfg, "kind", REWARD_KINDS, prefix=f"{prefix}.")
    check(
        cfg.kind != "function" or (cfg.function or "").count(":") == 1,
        f"{prefix}.function", cfg.function, "'module:function' when reward.kind=function",
    )
    check(
        cfg.kind != "classifier" or bool(cfg.path),
        f"{prefix}.path", cfg.path, "a model dir or hub id when reward.kind=classifier",
    )
    check(cfg.text in ("response", "full"), f"{prefix}.text", cfg.text, "'response' or 'full'")
    check(
        cfg.input == "text" or cfg.input == "tokens" and cfg.kind == "classifier",
        f"{prefix}.input", cfg.input,
        f"'text', or 'tokens' when {prefix}.kind=classifier (vader and functions read text)",
    )


def validate_model(model: ModelConfig) -> None:
    """The model section's static checks (files and devices are checked by `preflight`)."""
    check(
        model.value_model in ("separate", "shared") or bool(model.value_model),
        "model.value_model", model.value_model, "'separate', 'shared' or a checkpoint path",
    )
    check(
        model.device == "auto" or model.device.split(":")[0] in ("cpu", "cuda"),
        "model.device", model.device, "auto, cpu, cuda or cuda:N",
    )
    one_of(model, "dtype", ("auto", "float32", "bfloat16", "float16"), prefix="model.")
    if model.lora is not None:
        lora = model.lora
        at_least(lora, "r", prefix="model.lora.")
        positive(lora, "alpha", prefix="model.lora.")
        within(lora, "dropout", 0, 1, bounds="[)", prefix="model.lora.")
        check(
            len(lora.target_modules) > 0 and all(lora.target_modules),
            "model.lora.target_modules", lora.target_modules,
            "a non-empty list of module names, or ['all-linear']",
        )


def validate_data(data: DataConfig) -> None:
    """The data section's static checks (paths and token counts are checked by `preflight`)."""
    check(data.kind in ("reviews", "hf"), "data.kind", data.kind, "'reviews' or 'hf'")
    check(
        data.kind != "hf" or bool(data.path),
        "data.path", data.path, "a hub dataset name or local data files when data.kind=hf",
    )
    within(data, "eval_fraction", 0, 1, bounds="()", prefix="data.")
    at_least(data, "max_prompt_tokens", prefix="data.", nullable=True)
    check(
        str(data.chat_template).lower() in ("auto", "true", "false"),
        "data.chat_template", data.chat_template, "auto | true | false",
    )
