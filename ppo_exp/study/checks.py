"""A study file checked whole before its first trial, and before any storage is touched.

A mistake in a study otherwise surfaces hours in (a sampled value the run refuses, an
objective no run logs) or leaves a study row and a FAILED parent run behind (a sampler
that does not exist). `validate_study` raises `ConfigError` naming the first problem.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ppo_exp import checks, locations
from ppo_exp.config import ConfigError, PPOConfig, preflight, to_config
from ppo_exp.metrics import METRICS
from ppo_exp.study.settings import StudySweeperConf
from ppo_exp.study.space import search_space

MAX_INT_VALUES_CHECKED = 1000  # int ranges up to this size are checked value by value
SWEEPER = "hydra.sweeper"


def _check(ok: bool, key: str, value: object, accepted: str) -> None:
    if not ok:
        raise ConfigError(f"{SWEEPER}.{key}", value, accepted)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def validate_study(
    s: StudySweeperConf,
    run_config: DictConfig,
    *,
    samplers: dict[str, type],
    pruners: dict[str, type],
) -> None:
    """Refuse a study whose settings, search space or run config cannot all work.

    Args:
        s: the study's `hydra.sweeper` settings.
        run_config: the composed run config the trials start from (without `hydra`).
        samplers: the sampler classes by name, as the sweeper builds them.
        pruners: the pruner classes by name.
    """
    _check(_is_int(s.n_trials) and s.n_trials >= 1, "n_trials", s.n_trials, "an integer >= 1")
    _check(
        bool(s.seeds) and all(_is_int(x) and 0 <= x < 2**32 for x in s.seeds),
        "seeds",
        s.seeds,
        "a non-empty list of integers >= 0",
    )
    _check(s.max_failures >= 1, "max_failures", s.max_failures, "an integer >= 1")
    _check(
        _is_int(s.retry_failed) and s.retry_failed >= 0, "retry_failed", s.retry_failed,
        "an integer >= 0 (retries per trial whose worker died; 0 = none)",
    )
    _check(
        s.heartbeat_interval >= 1,
        "heartbeat_interval",
        s.heartbeat_interval,
        "an integer >= 1 (seconds)",
    )
    _check(
        s.grace_period > s.heartbeat_interval,
        "grace_period",
        s.grace_period,
        f"seconds > heartbeat_interval={s.heartbeat_interval} (else workers fail each "
        "other's live trials)",
    )
    _check(
        isinstance(s.parallel_seeds, bool), "parallel_seeds", s.parallel_seeds, "true or false"
    )
    _check(
        bool(s.objectives), "objectives", s.objectives,
        "one or two metrics, each maximize | minimize, e.g. {eval/score_auc: maximize}",
    )
    for metric, direction in s.objectives.items():
        accepted = "metrics the trainer logs: " + ", ".join(METRICS)
        _check(metric in METRICS, "objectives", metric, accepted)
        _check(
            direction in ("maximize", "minimize"), f"objectives.{metric}", direction,
            "maximize | minimize",
        )
    check_storage(s.storage)
    check_algorithm("sampler", s.sampler, samplers)
    check_algorithm("pruner", s.pruner, pruners)
    base = _run_config(run_config, {})
    preflight(base)
    space = search_space(s.params)
    for key, spec in s.params.items():
        for value in _values_to_check(spec, space[key]):
            _run_config(run_config, {key: value}, f"params.{key}", spec)
    for i, params in enumerate(s.enqueue):
        _run_config(run_config, dict(params), f"enqueue[{i}]", params)


def _values_to_check(spec: dict, distribution: Any) -> list[Any]:
    """Values of a search range that stand for all of it: bounds, or every int or choice."""
    if "choices" in spec:
        return list(spec["choices"])
    low, high = distribution.low, distribution.high
    if spec.get("type") == "int":
        step = distribution.step or 1
        if (high - low) // step < MAX_INT_VALUES_CHECKED and not distribution.log:
            return list(range(low, high + 1, step))
        # a log int range can hold any integer between its bounds
        if high - low < MAX_INT_VALUES_CHECKED:
            return list(range(low, high + 1))
    return [low, high]  # every range a key accepts is an interval: its bounds suffice


def _run_config(
    run_config: DictConfig, values: dict, where: str = "", shown: object = None
) -> Any:
    """The validated run config with `values` set; a refusal names `where` in the study."""
    try:
        return to_config(OmegaConf.merge(run_config, values))
    except (ConfigError, OmegaConfBaseException) as error:
        if not values:
            raise
        reason = checks.explain(error, PPOConfig).removeprefix("invalid config: ")
        raise ConfigError(
            f"{SWEEPER}.{where}", shown, f"values every run accepts, but the run refuses {reason}"
        ) from None


def check_algorithm(kind: str, spec: dict[str, Any], table: dict[str, type]) -> None:
    """A known sampler or pruner whose arguments its class accepts, and that builds."""
    spec = dict(spec)
    name = spec.pop("name", None)
    _check(name in table, f"{kind}.name", name, " | ".join(table))
    cls = table[name]
    accepted = inspect.signature(cls).parameters
    anywhere = {p for other in table.values() for p in inspect.signature(other).parameters}
    for arg in spec:
        # An argument of another pruner is left over from Hydra merging a command-line
        # `pruner={name:none}` into the study file's: the sweeper ignores it, with a
        # warning. An argument no class takes is a typo.
        _check(
            arg in anywhere,
            f"{kind}.{arg}",
            spec[arg],
            f"arguments of {cls.__name__}: " + ", ".join(accepted),
        )
    kwargs = {k: v for k, v in spec.items() if k in accepted}
    if name == "patient":
        check_algorithm(kind, kwargs.pop("wrapped_pruner", {}), table)
        return
    try:
        cls(**kwargs)
    except Exception as error:  # the class's own check of its arguments
        raise ConfigError(f"{SWEEPER}.{kind}", {"name": name, **spec}, str(error)) from None


def check_storage(url: str | None) -> None:
    """A storage URL of a known kind whose folder exists, or whose server answers."""
    if url is None:
        return
    accepted = "sqlite:///FILE, journal:FILE, postgresql://..., mysql://..."
    shown = locations.mask(url)
    if url.startswith("journal:"):
        path = Path(url.removeprefix("journal:")).expanduser()
        _check(path.name != "", "storage", shown, accepted)
        folder = path.resolve().parent
        _check(folder.is_dir(), "storage", shown, f"{accepted}; no folder {folder}")
        return
    parts = urlsplit(url)
    dialect = parts.scheme.split("+")[0]
    if dialect == "sqlite":
        path = Path(url.removeprefix("sqlite:///")).expanduser()
        _check(url.startswith("sqlite:///"), "storage", shown, accepted)
        folder = path.resolve().parent
        _check(folder.is_dir(), "storage", shown, f"{accepted}; no folder {folder}")
        return
    _check(dialect in ("postgresql", "mysql", "mariadb"), "storage", shown, accepted)
    default_port = 5432 if dialect == "postgresql" else 3306
    locations.check_reachable(f"{SWEEPER}.storage", url, parts.hostname, parts.port or default_port)
