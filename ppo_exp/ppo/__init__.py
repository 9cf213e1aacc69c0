"""The PPO algorithm for language models: pure maths (`gae`, `losses`), the actor-critic
(`models`), sampling and scoring (`rollout`), the update (`replay`) and the training loop
(`trainer`). It knows nothing of Hydra, MLflow or Optuna."""
