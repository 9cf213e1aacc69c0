"""Checks of a run config against the world outside it, before any model loads.

`config.validate` checks each setting's range; the checks here look further, and all
of them are cheap (no torch, no MLflow, no model weights):

- `closed_keys`: every key of the composed config is a key of the schema;
- `import_function`: `reward.function` imports, is callable and takes one list of texts
  (checked with `inspect`, never called);
- `explain` / `refuse`: any error of composing or validating as one line, exit 2.

Checkpoints, the hub and the tracking store are checked in `locations.py`. Each check
raises `ConfigError` (one line: key, value, what is accepted).
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import os
import pkgutil
import sys
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence

from ppo_exp.config import ConfigError
from ppo_exp.locations import mask

FUNCTION_ACCEPTED = "'module:function' naming an importable callable, list[str] -> list[float]"
BAD_INPUT = 2  # exit status of a refused config (the shell's "usage error")


# --- closed schema ---------------------------------------------------------------------


def closed_keys(values: Mapping, schema: type, prefix: str = "") -> None:
    """Refuse a key that the dataclass `schema` does not have (e.g. `+clip_epsilon=0.1`).

    Args:
        values: the composed config (a DictConfig or a dict), without its `hydra` node.
        schema: the dataclass it must follow; nested dataclass fields are checked too.
        prefix: dotted path of `values` inside the whole config, for the message.
    """
    known = {f.name: f for f in dataclasses.fields(schema)}
    hints = typing.get_type_hints(schema)
    for key in values:
        name = f"{prefix}{key}"
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f" (did you mean {prefix}{close[0]}?)" if close else ""
            raise ConfigError(
                name, values[key], f"a key of the schema in ppo_exp/config/{hint}; unknown key"
            )
        section = _section(hints[key])
        if section is not None and isinstance(values[key], Mapping):
            closed_keys(values[key], section, prefix=f"{name}.")


def _section(annotation: object) -> type | None:
    """The dataclass of a section (`model`), or of an optional one (`LoraSettings | None`)."""
    found = (t for t in (annotation, *typing.get_args(annotation)) if dataclasses.is_dataclass(t))
    return next(found, None)


def _field_type(schema: type, dotted: str) -> tuple[type | None, type]:
    """The annotated type of `dotted` inside `schema` (None if absent), and its parent class."""
    *parents, leaf = dotted.split(".")
    for name in parents:
        schema = _section(typing.get_type_hints(schema).get(name)) or schema
    hints = typing.get_type_hints(schema) if dataclasses.is_dataclass(schema) else {}
    return hints.get(leaf), schema


def _accepted_type(annotation: object) -> str:
    names = {float: "a number", int: "an integer", bool: "true or false", str: "a string"}
    args = typing.get_args(annotation)
    optional = type(None) in args
    base = next((a for a in args if a is not type(None)), annotation) if args else annotation
    return names.get(base, str(base)) + (", or null" if optional else "")


def explain(error: BaseException, schema: type) -> str:
    """One line for an error of composing or validating the config (key, value, accepted).

    Args:
        error: what Hydra, OmegaConf or `config.validate` raised.
        schema: the run config's dataclass, to say what a key accepts.
    """
    if isinstance(error.__cause__, ConfigError):  # raised inside something Hydra built
        error = error.__cause__
    if isinstance(error, ConfigError):
        return str(error)
    cause = error.__cause__
    key = str(getattr(cause, "full_key", None) or "")
    prefix = ""
    if key.startswith("hydra.sweeper."):  # a study setting
        from ppo_exp.study.settings import StudySweeperConf

        schema, prefix = StudySweeperConf, "hydra.sweeper."
    if key and (prefix or not key.startswith("hydra.")):
        annotation, parent = _field_type(schema, key.removeprefix(prefix))
        if annotation is None:  # a key the schema lacks (`foo=1`, `model.foo=1`)
            known = [f.name for f in dataclasses.fields(parent)]
            close = difflib.get_close_matches(key.split(".")[-1], known, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            return f"invalid config: unknown key {key}; accepted: a key of the schema{hint}"
        return str(ConfigError(key, getattr(cause, "value", None), _accepted_type(annotation)))
    parts: list[str] = []
    for line in str(error).splitlines():
        if line.startswith(("Config search path", "Set the environment")):
            break
        if line.startswith("\t") and parts:  # Hydra's list of options, one per line
            parts[-1] += (" " if parts[-1].endswith(":") else ", ") + line.strip()
        elif line.strip():
            parts.append(line.strip())
    return "invalid config: " + ("; ".join(parts) or type(error).__name__)


def refuse(error: BaseException, schema: type) -> SystemExit:
    """Print the one-line reason a config is refused; return the SystemExit to raise for it."""
    print(f"error: {mask(explain(error, schema))}", file=sys.stderr)
    return SystemExit(BAD_INPUT)


# --- reward function -------------------------------------------------------------------


def import_function(spec: str | None) -> Callable:
    """Import the callable named by `"module:function"` and check that it takes one list.

    Args:
        spec: the `reward.function` setting; the part after ':' may be dotted
            (``"pkg.mod:Class.method"``). The working directory is importable.

    Returns:
        The callable (never called here).

    Raises:
        ConfigError: `spec` is malformed, its module or attribute does not exist, or it is
            not a callable taking one positional argument (a list of texts).
    """
    if not isinstance(spec, str) or spec.count(":") != 1 or "" in spec.split(":"):
        raise ConfigError("reward.function", spec, FUNCTION_ACCEPTED)
    module_name, attr_path = spec.split(":")
    _make_cwd_importable()
    try:
        target = pkgutil.resolve_name(spec)
    except ModuleNotFoundError as exc:
        # Only report "not found" when the named module itself is missing; a missing
        # dependency inside the user's module is their bug and its own error says more.
        if exc.name is None or not _is_same_or_parent(exc.name, module_name):
            raise
        raise ConfigError(
            "reward.function", spec,
            f"{FUNCTION_ACCEPTED}; module {module_name!r} was not found "
            f"(searched the current directory {os.getcwd()!r} and the installed packages)",
        ) from exc
    except AttributeError as exc:
        raise ConfigError(
            "reward.function", spec,
            f"{FUNCTION_ACCEPTED}; module {module_name!r} has no attribute {attr_path!r}",
        ) from exc
    if not callable(target):
        raise ConfigError(
            "reward.function", spec,
            f"{FUNCTION_ACCEPTED}; it is a {type(target).__name__}, not callable",
        )
    _check_takes_texts(target, spec)
    return target


def _check_takes_texts(fn: Callable, spec: str) -> None:
    """`fn(texts)` must bind, and an annotated first parameter must be a sequence."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return  # builtins without a signature: nothing to check
    try:
        signature.bind(["text"])
    except TypeError as error:
        raise ConfigError(
            "reward.function", spec, f"{FUNCTION_ACCEPTED}; {fn.__name__}{signature}: {error}"
        ) from None
    first = next(iter(signature.parameters.values()), None)
    if first is None or first.annotation is inspect.Parameter.empty:
        return
    annotation = first.annotation
    if isinstance(annotation, str):  # `from __future__ import annotations`
        ok = annotation.split("[")[0].split(".")[-1] in ("list", "List", "Sequence", "Iterable")
    else:
        origin = typing.get_origin(annotation) or annotation
        ok = origin in (list, Sequence, Iterable, typing.Any)
    if not ok:
        raise ConfigError(
            "reward.function",
            spec,
            f"{FUNCTION_ACCEPTED}; its first parameter is annotated {annotation!r}",
        )


def _make_cwd_importable() -> None:
    """Put the working directory on sys.path, as `python script.py` would for its own dir."""
    # '' on sys.path already means "the current directory" (python -m, the REPL).
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)


def _is_same_or_parent(missing: str, module_name: str) -> bool:
    """True if `missing` is `module_name` or one of its parent packages."""
    return module_name == missing or module_name.startswith(missing + ".")
