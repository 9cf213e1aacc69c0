"""Passwords in URLs masked in the files Hydra writes for a launch.

Hydra saves each job's composed config, its own config and the command-line overrides in
`<job dir>/.hydra/` (config.yaml, hydra.yaml, overrides.yaml) and, for a plain `-m`
sweep, the sweep's config in `<sweep dir>/multirun.yaml`. A storage or tracking URL given
as `postgresql://user:password@host/db` would stay there in plain text; the callback
`ppo_exp.callbacks.MaskSecretsInJobFiles` rewrites them with `locations.mask` (the function
that masks the console and MLflow) as soon as Hydra has written them:

- a job's `.hydra/` files: `on_job_start`, which Hydra 1.3 calls right after saving them
  (`hydra.core.utils.run_job`);
- `multirun.yaml`: the basic sweeper writes it inside `sweep()`, after
  `on_multirun_start`, so the first job's `on_job_start` masks it (every job does it
  again, which changes nothing), and `on_multirun_end` for a sweep whose jobs all failed
  to start.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

JOB_FILES = ("config.yaml", "hydra.yaml", "overrides.yaml")


def mask_file(path: Path) -> bool:
    """Rewrite `path` with its URL passwords masked, atomically; False if it had none."""
    from ppo_exp.locations import mask

    if not path.is_file():
        return False
    text = path.read_text()
    masked = mask(text)
    if masked == text:
        return False
    # Jobs running side by side may mask the same multirun.yaml: each writes a whole file.
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.",
                                     delete=False) as out:
        out.write(masked)
    os.replace(out.name, path)
    return True


def job_files(config: DictConfig) -> list[Path]:
    """The `.hydra/` files of the job `config` describes (none if `output_subdir` is null)."""
    subdir = OmegaConf.select(config, "hydra.output_subdir")
    output_dir = OmegaConf.select(config, "hydra.runtime.output_dir")
    if subdir is None or output_dir is None:
        return []
    return [Path(output_dir, subdir, name) for name in JOB_FILES]


def sweep_record(config: DictConfig) -> Path | None:
    """The sweep's `multirun.yaml` (a relative sweep dir is under the launch's cwd)."""
    sweep_dir = OmegaConf.select(config, "hydra.sweep.dir")
    if sweep_dir is None or OmegaConf.select(config, "hydra.mode") != RunMode.MULTIRUN:
        return None
    return Path(OmegaConf.select(config, "hydra.runtime.cwd") or ".", sweep_dir, "multirun.yaml")


def mask_job_files(config: DictConfig) -> None:
    """Mask the job's `.hydra/` files and, in a sweep, its `multirun.yaml`."""
    record = sweep_record(config)
    for path in [*job_files(config), *([record] if record else [])]:
        mask_file(path)
