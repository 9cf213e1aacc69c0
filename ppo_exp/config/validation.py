"""Range checks of settings, shared by every typed config (this package, reward_model/config.py).

Each check raises `ConfigError`, whose one-line message names the key, the value and
what is accepted. `section` is the dataclass holding the settings and `prefix` its dotted
place in the whole config ("model.lora."), so the message names the key as typed.
"""

from __future__ import annotations

import math


class ConfigError(ValueError):
    """A setting is out of range: the message names the key, the value and what is accepted."""

    def __init__(self, key: str, value: object, accepted: str):
        super().__init__(f"invalid config: {key}={value!r}; accepted: {accepted}")
        self.key, self.value, self.accepted = key, value, accepted


def check(ok: bool, key: str, value: object, accepted: str) -> None:
    """Raise `ConfigError(key, value, accepted)` unless `ok`."""
    if not ok:
        raise ConfigError(key, value, accepted)


def finite(x: object) -> bool:
    """A real number (int or float), neither NaN nor infinite."""
    return isinstance(x, (int, float)) and math.isfinite(x)


def positive(section: object, *keys: str, prefix: str = "", nullable: bool = False) -> None:
    """Each of `keys` is a number > 0 (or null when `nullable`)."""
    for key in keys:
        value = getattr(section, key)
        ok = finite(value) and value > 0
        if nullable:
            check(value is None or ok, prefix + key, value, "a number > 0, or null")
        else:
            check(ok, prefix + key, value, "a number > 0")


def non_negative(section: object, *keys: str, prefix: str = "") -> None:
    """Each of `keys` is a number >= 0."""
    for key in keys:
        value = getattr(section, key)
        check(finite(value) and value >= 0, prefix + key, value, "a number >= 0")


def at_least(
    section: object, *keys: str, minimum: int = 1, prefix: str = "", nullable: bool = False
) -> None:
    """Each of `keys` is an integer >= `minimum` (or null when `nullable`)."""
    accepted = f"an integer >= {minimum}" + (", or null" if nullable else "")
    for key in keys:
        value = getattr(section, key)
        check((value is None and nullable) or (value is not None and value >= minimum),
              prefix + key, value, accepted)


def within(
    section: object, key: str, low: float, high: float, *, bounds: str = "[]", prefix: str = ""
) -> None:
    """`key` is a number between `low` and `high`; `bounds` says which ends are included:
    "[]" both, "()" neither, "[)" only `low`."""
    value = getattr(section, key)
    above = finite(value) and (value >= low if bounds[0] == "[" else value > low)
    below = finite(value) and (value <= high if bounds[1] == "]" else value < high)
    accepted = f"a number in {bounds[0]}{low:g}, {high:g}{bounds[1]}"
    check(above and below, prefix + key, value, accepted)


def one_of(section: object, key: str, choices: tuple[str, ...], *, prefix: str = "") -> None:
    """`key` is one of `choices` (the message lists them: "a | b | c")."""
    value = getattr(section, key)
    check(value in choices, prefix + key, value, " | ".join(choices))
