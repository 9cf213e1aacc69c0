"""Reward models learned from preference pairs: the first half of the RLHF pipeline.

    python -m ppo_exp.reward_model                        # embedded pairs, labelled by VADER
    python -m ppo_exp.reward_model preferences=dataset preferences.path=prefs.jsonl
    python -m ppo_exp.run reward=learned reward.path=reward_model +reward@reward.gold=vader

- `config`: the typed settings of the app (`conf/reward_model.yaml`, `conf/preferences/`);
- `loss`: Bradley-Terry loss, preference accuracy, the annotator and the normalisation,
  as small pure functions;
- `preferences`: chosen/rejected pairs from any `datasets` source (plain text or chat
  messages), or built offline (`embedded`): pairs of responses of the default model,
  labelled by VADER through a noisy Bradley-Terry annotator;
- `train`: the training loop, held-out evaluation and the saved checkpoint;
- `__main__`: the Hydra app, tracked in MLflow.
"""
