"""The shipped Optuna studies, installed as the package `ppo_exp.studies`."""
