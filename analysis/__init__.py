"""The analysis notebooks, installed as the package `ppo_exp.notebooks`."""
