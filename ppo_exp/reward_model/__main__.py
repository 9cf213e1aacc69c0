"""The Hydra app: `python -m ppo_exp.reward_model [overrides]` trains one reward model.

python -m ppo_exp.reward_model                                   # embedded VADER pairs
python -m ppo_exp.reward_model preferences.label_noise=0.1 out=rm_noisy
python -m ppo_exp.reward_model preferences=dataset preferences.path=pairs.jsonl

The run is tracked in MLflow (tag `ppo_exp.kind=reward_model`) with its settings as
params, the held-out loss and accuracy per epoch, and the built preference pairs; the
model is saved with `save_pretrained` to `out`, ready for `reward=learned reward.path=OUT`.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from ppo_exp.config import ConfigError
from ppo_exp.reward_model.config import RewardModelConfig, params, preflight, to_config

log = logging.getLogger("ppo_exp")


def load(cfg: DictConfig) -> RewardModelConfig:
    """Validate the composed config; a bad value exits with one line naming it."""
    try:
        rm_cfg = to_config(cfg)
        preflight(rm_cfg)
        return rm_cfg
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


def train_and_save(cfg: DictConfig) -> dict[str, float]:
    """Build or read the pairs, train, save to `cfg.out`, all inside one MLflow run."""
    rm_cfg = load(cfg)
    # Imported here so that a bad config fails fast, before torch and transformers load.
    import datasets
    import mlflow
    from transformers.utils import logging as hf_logging

    from ppo_exp import tracking
    from ppo_exp.reward_model.preferences import load_preferences
    from ppo_exp.reward_model.train import to_pairs, train_reward_model
    from ppo_exp.task.base_model import tiny_model_path

    datasets.disable_progress_bars()  # one line per step in the log, not a bar per file
    hf_logging.disable_progress_bar()

    base = rm_cfg.base or str(tiny_model_path())
    with tracking.start_run(rm_cfg, cfg, kind="reward_model", params=params(rm_cfg)):
        try:
            pairs = load_preferences(rm_cfg.preferences)
        except ConfigError as error:  # a missing split or column, found on reading
            print(f"error: {error}", file=sys.stderr)
            raise SystemExit(2) from None
        out = Path(rm_cfg.out)
        for split, data in pairs.items():
            data.to_json(out / "preferences" / f"{split}.jsonl", force_ascii=False)
        mlflow.log_artifacts(str(out / "preferences"), "preferences")
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(base)
        train, test = (to_pairs(pairs[s], tokenizer, text=rm_cfg.text) for s in ("train", "test"))
        mlflow.log_metrics(
            {"data/train_pairs": len(train.chosen), "data/test_pairs": len(test.chosen)}
        )
        model, tokenizer, metrics = train_reward_model(
            rm_cfg,
            train,
            test,
            base=base,
            log_metrics=lambda m, step: mlflow.log_metrics(m, step=step),
        )
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        mlflow.set_tag("ppo_exp.reward_model_path", str(out.resolve()))
        log.info("saved the reward model to %s: %s", out, _summary(metrics))
        return metrics


def _summary(metrics: dict[str, float]) -> str:
    names = ("eval/accuracy", "eval/accuracy_gold", "eval/loss", "normalise/gain", "normalise/bias")
    return ", ".join(f"{k} {metrics[k]:.4f}" for k in names if k in metrics)


@hydra.main(config_path="pkg://ppo_exp.conf", config_name="reward_model", version_base=None)
def main(cfg: DictConfig) -> float:
    return train_and_save(cfg)["eval/accuracy"]


if __name__ == "__main__":
    main()
