"""Typed settings of `python -m ppo_exp.reward_model`, validated on load.

Composed from `conf/reward_model.yaml` and the `preferences/` group (`embedded` or
`dataset`). Each setting is documented here, once; the MLflow params of a reward-model
run are the same names (`preferences.*` flattened as `preferences.<key>`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from ppo_exp.config import ConfigError, MlflowConfig

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


@dataclass
class NormaliseConfig:
    samples: int = 256  # policy samples scored to fit gain and bias; 0 = off (gain 1, bias 0)
    policy: str | None = None  # the policy sampled; null = the embedded tiny model
    temperature: float = 0.7  # its sampling temperature (the PPO default)
    max_new_tokens: int = 24  # response length cap, tokens


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
        validate(self)


def _check(ok: bool, key: str, value: object, accepted: str) -> None:
    if not ok:
        raise ConfigError(key, value, accepted)


def _number(x: object) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def validate(cfg: RewardModelConfig) -> None:
    """Raise `ConfigError` for the first setting out of range (called on every load)."""
    p = cfg.preferences
    _check(
        p.source in ("embedded", "dataset"),
        "preferences.source",
        p.source,
        "'embedded' or 'dataset'",
    )
    _check(
        p.source != "dataset" or bool(p.path),
        "preferences.path",
        p.path,
        "a datasets source (hub id, dir or file) when preferences.source=dataset",
    )
    _check(
        _number(p.test_size) and 0 < p.test_size < 1,
        "preferences.test_size",
        p.test_size,
        "a number in (0, 1)",
    )
    _check(
        p.max_pairs is None or p.max_pairs >= 1,
        "preferences.max_pairs",
        p.max_pairs,
        "an integer >= 1, or null",
    )
    _check(p.pairs >= 4, "preferences.pairs", p.pairs, "an integer >= 4")
    _check(
        _number(p.temperature) and p.temperature >= 0,
        "preferences.temperature",
        p.temperature,
        "a number >= 0",
    )
    _check(
        _number(p.label_noise) and 0 <= p.label_noise < 0.5,
        "preferences.label_noise",
        p.label_noise,
        "a number in [0, 0.5)",
    )
    for key in ("sample_temperature",):
        _check(
            _number(getattr(p, key)) and getattr(p, key) > 0,
            f"preferences.{key}",
            getattr(p, key),
            "a number > 0",
        )
    _check(p.max_new_tokens >= 1, "preferences.max_new_tokens", p.max_new_tokens, "an integer >= 1")
    _check(cfg.text in ("response", "full"), "text", cfg.text, "'response' or 'full'")
    for key in ("epochs", "batch_size", "max_length"):
        _check(getattr(cfg, key) >= 1, key, getattr(cfg, key), "an integer >= 1")
    _check(_number(cfg.lr) and cfg.lr > 0, "lr", cfg.lr, "a number > 0")
    _check(
        _number(cfg.weight_decay) and cfg.weight_decay >= 0,
        "weight_decay",
        cfg.weight_decay,
        "a number >= 0",
    )
    _check(
        cfg.max_grad_norm is None or (_number(cfg.max_grad_norm) and cfg.max_grad_norm > 0),
        "max_grad_norm",
        cfg.max_grad_norm,
        "a number > 0, or null",
    )
    n = cfg.normalise
    _check(
        n.samples == 0 or n.samples >= 2,
        "normalise.samples",
        n.samples,
        "0 (off) or an integer >= 2",
    )
    _check(
        _number(n.temperature) and n.temperature > 0,
        "normalise.temperature",
        n.temperature,
        "a number > 0",
    )
    _check(n.max_new_tokens >= 1, "normalise.max_new_tokens", n.max_new_tokens, "an integer >= 1")
    _check(bool(cfg.out), "out", cfg.out, "a directory to save the reward model in")


def preflight(cfg: RewardModelConfig) -> None:
    """Cheap checks outside the config, before any model loads: the paths it names exist."""
    from ppo_exp import checks

    checks.checkpoint_config("base", cfg.base)
    checks.checkpoint_config("normalise.policy", cfg.normalise.policy)
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
