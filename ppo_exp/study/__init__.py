"""Optuna studies over the run config, launched as `python -m ppo_exp.run -m study=NAME`.

Each `studies/NAME.yaml` (shipped as the package `ppo_exp.studies`, or in `./studies`
where you run) is an option of the Hydra config group `study`: a `@package _global_`
overlay that picks the study sweeper, its search space and objective, and the run
settings its trials share.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf


def register_studies() -> list[str]:
    """Register the study sweeper with Hydra, and every studies/*.yaml as `study=NAME`
    (./studies wins over the shipped ones)."""
    from hydra.core.plugins import Plugins

    from hydra_plugins.ppo_exp_sweeper import OptunaStudySweeper  # stores hydra/sweeper=...

    # Hydra finds plugins by scanning the `hydra_plugins` namespace package, which it cannot
    # do through the import hooks of an editable install: register ours by hand as well.
    Plugins.instance().register(OptunaStudySweeper)

    store = ConfigStore.instance()
    names = []
    shipped = files("ppo_exp.studies")
    for folder in (Path(str(shipped)), Path.cwd() / "studies"):
        for path in sorted(folder.glob("*.yaml")):
            store.store(
                group="study", name=path.stem, node=OmegaConf.load(path), package="_global_"
            )
            names.append(path.stem)
    return names
