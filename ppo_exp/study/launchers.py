"""What the study sweeper does for particular Hydra launchers before its slots start.

The sweeper's `n_jobs` slot threads call `launcher.launch` concurrently. The Ray launcher
starts its cluster inside `launch` (`if not ray.is_initialized(): ray.init(...)`), so two
slots starting together both call `ray.init` and one fails ("Perhaps you called ray.init
twice by accident?"): the cluster is started once here, in the sweeper's own thread, with
the settings the launcher would use.
"""

from __future__ import annotations

from typing import Any

RAY_LAUNCHER = "hydra_plugins.hydra_ray_launcher.ray_launcher"
OBJECT_STORE_BYTES = 78_643_200  # the Ray launcher's own default for a local cluster


def start(launcher: Any) -> None:
    """Set up `launcher`'s cluster once, before parallel launches race to (Ray only)."""
    if type(launcher).__module__ != RAY_LAUNCHER:
        return
    from hydra_plugins.hydra_ray_launcher._launcher_util import start_ray

    launcher.ray_cfg.init.setdefault("object_store_memory", OBJECT_STORE_BYTES)
    start_ray(launcher.ray_cfg.init)
