"""Typed settings of `python -m ppo_exp.reward_model`, validated on load.

Composed from `conf/reward_model.yaml` and the `preferences/` group (`embedded` or
`dataset`). Each setting is documented here, once; the MLflow params of a reward-model
run are the same names (`preferences.*` flattened as `preferences.<key>`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from ppo_exp.config import ConfigError, MlflowConfig
from ppo_exp.config.validation import (
    at_least,
    check,
    non_negative,
    one_of,
    positive,
    within,
)

# Local preference files are read with the `datasets` builder of their format.
FILE_BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


@dataclass
class PreferencesConfig:
    source: str = "embedded"  # "embedded": built offline (below); "dataset": `datasets` source
    # --- source=dataset: any `datasets.load_dataset` source with chosen/rejected columns
    path: str | None = None  # hub id, local dir, or a .jsonl/.json/.csv/.parquet file
    name: str | None = None  # the dataset's config name, if it has several
    split: str = "train"  # split the pairs are read from
    test_split: str | None = None  # held-out split; null = carve `test_size` out of `split`
    chosen: str = "chosen"  # column of the preferred text (a string, or chat messages)
    rejected: str = "rejected"  # column of the other text
    prompt: str | None = None  # optional prompt column, prepended when text=full
    max_pairs: int | None = None  # keep at most this many training pairs; null = all
    # --- both: how the held-out pairs are carved out
    test_size: float = 0.2  # share of pairs held out (when there is no test_split), in (0, 1)
    # --- source=embedded: pairs of responses of the default model on the review prompts,
    # labelled by VADER (the gold scorer) through a Bradley-Terry annotator
    pairs: int = 8000  # pairs built (train + held out); exact ties in VADER are dropped;
    # 8000 (6400 to train) gives ~93% held-out accuracy against the noise-free VADER order,
    # 4000 about 90%, 2000 about 87% (README, "What the reward-model pipeline measured")
    temperature: float = 0.1  # annotator: P(a preferred) = sigmoid((vader_a - vader_b) / T);
    # 0 = always the higher VADER score
    label_noise: float = 0.0  # annotator: share of labels flipped at random on top, [0, 0.5)
    sample_temperature: float = 1.0  # sampling temperature of the two responses
    max_new_tokens: int = 24  # response length cap, tokens (as the PPO runs)
    seed: int = 0  # seeds the prompts, the sampling and the annotator

    def __post_init__(self) -> None:
        """Refuse a `preferences.*` setting out of range (`ConfigError`)."""
        pre = "preferences."  # how the keys are named in messages
        one_of(self, "source", ("embedded", "dataset"), prefix=pre)
        check(
            self.source != "dataset" or bool(self.path), "preferences.path", self.path,
            "a datasets source (hub id, dir or file) when preferences.source=dataset",
        )
        within(self, "test_size", 0, 1, bounds="()", prefix=pre)
        at_least(self, "max_pairs", prefix=pre, nullable=True)
        at_least(self, "pairs", minimum=4, prefix=pre)
        non_negative(self, "temperature", prefix=pre)
        within(self, "label_noise", 0, 0.5, bounds="[)", prefix=pre)
        positive(self, "sample_temperature", prefix=pre)
        at_least(self, "max_new_tokens", prefix=pre)


@dataclass
class NormaliseConfig:
    samples: int = 256  # policy samples scored to fit gain and bias; 0 = off (gain 1, bias 0)
    policy: str | None = None  # the policy sampled; null = the embedded tiny model
    temperature: float = 0.7  # its sampling temperature (the PPO default)
    max_new_tokens: int = 24  # response length cap, tokens

    def __post_init__(self) -> None:
        """Refuse a `normalise.*` setting out of range (`ConfigError`)."""
        check(self.samples == 0 or self.samples >= 2, "normalise.samples", self.samples,
              "0 (off) or an integer >= 2")
        positive(self, "temperature", prefix="normalise.")
        at_least(self, "max_new_tokens", prefix="normalise.")


@dataclass
class RewardModelConfig:
    base: str | None = None  # checkpoint the reward model starts from; null = the tiny model
    out: str = "reward_model"  # where the trained model is saved (save_pretrained)
    text: str = "response"  # what is scored: "response", or "full" (prompt + response)
    epochs: int = 3  # passes over the training pairs; held-out loss/accuracy after each
    batch_size: int = 32  # pairs per optimiser step
    lr: float = 3e-4  # AdamW learning rate
    weight_decay: float = 0.0  # AdamW weight decay
    max_length: int = 64  # tokens per text (longer ones are truncated)
    max_grad_norm: float | None = 1.0  # global gradient-norm clip; null = off
    seed: int = 0  # same config + seed = same model on CPU
    preferences: PreferencesConfig = field(default_factory=PreferencesConfig)
    normalise: NormaliseConfig = field(default_factory=NormaliseConfig)
    mlflow: MlflowConfig = field(default_factory=MlflowConfig)

    def __post_init__(self) -> None:
        """Refuse a top-level setting out of range (each section checks its own)."""
        check(self.text in ("response", "full"), "text", self.text, "'response' or 'full'")
        at_least(self, "epochs", "batch_size", "max_length")
        positive(self, "lr")
        non_negative(self, "weight_decay")
        positive(self, "max_grad_norm", nullable=True)
        check(bool(self.out), "out", self.out, "a directory to save the reward model in")


def preflight(cfg: RewardModelConfig) -> None:
    """Cheap checks outside the config, before any model loads: the paths it names exist."""
    from ppo_exp import locations

    locations.checkpoint_config("base", cfg.base)
    locations.checkpoint_config("normalise.policy", cfg.normalise.policy)
    p = cfg.preferences
    if p.source == "dataset":
        local = Path(p.path).expanduser()
        looks_local = local.suffix in FILE_BUILDERS or p.path.startswith((".", "/", "~"))
        if looks_local and not local.exists():
            raise ConfigError(
                "preferences.path",
                p.path,
                f"a preferences file or directory, or a hub dataset; {local} does not exist",
            )


def params(cfg: RewardModelConfig) -> dict[str, object]:
    """The settings logged as MLflow params, flat: `lr`, `preferences.label_noise`, ..."""
    flat = {k: v for k, v in asdict(cfg).items() if not isinstance(v, dict)}
    for section in ("preferences", "normalise"):
        flat.update({f"{section}.{k}": v for k, v in asdict(getattr(cfg, section)).items()})
    return flat


def to_config(cfg: DictConfig) -> RewardModelConfig:
    """Turn the composed Hydra config into a validated `RewardModelConfig`."""
    merged = OmegaConf.merge(OmegaConf.structured(RewardModelConfig), cfg)
    return OmegaConf.to_object(merged)


ConfigStore.instance().store(name="reward_model_schema", node=RewardModelConfig)
