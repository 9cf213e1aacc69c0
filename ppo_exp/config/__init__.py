"""Typed run configuration: one flat name per PPO hyperparameter, validated on load.

Every hyperparameter is a top-level key, so the same name is the Hydra override
(`clip_eps=0.1`), the Optuna parameter, the MLflow param and the pandas column
(`params.clip_eps`). The config groups in `conf/` (gae/, clip/, loss/, kl/, train/...)
are named presets over these keys. Each setting is documented once, in `ppo.py`
(the hyperparameters) or `sections.py` (model, data, reward, mlflow, optuna); the range
checks they share are in `validation.py`.
"""

from hydra.core.config_store import ConfigStore

from ppo_exp.config.ppo import PPOConfig, mlflow_params, preflight, to_config, validate
from ppo_exp.config.sections import (
    REWARD_KINDS,
    DataConfig,
    GoldConfig,
    LoraSettings,
    MlflowConfig,
    ModelConfig,
    RewardConfig,
    TrialConfig,
)
from ppo_exp.config.validation import ConfigError

__all__ = [
    "REWARD_KINDS",
    "ConfigError",
    "DataConfig",
    "GoldConfig",
    "LoraSettings",
    "MlflowConfig",
    "ModelConfig",
    "PPOConfig",
    "RewardConfig",
    "TrialConfig",
    "mlflow_params",
    "preflight",
    "to_config",
    "validate",
]

ConfigStore.instance().store(name="ppo_schema", node=PPOConfig)
