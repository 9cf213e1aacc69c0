"""Hydra's config tree, installed as the package `ppo_exp.conf` (pkg://ppo_exp.conf)."""
