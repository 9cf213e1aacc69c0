"""Where a run reads and writes, checked before any model loads: local checkpoints (a
`config.json`), hub ids (cached, or the hub reachable), the MLflow tracking store (a
known kind, reachable within a short timeout instead of MLflow's minutes of retries);
and the passwords in their URLs, masked wherever a URL is printed or logged.

Each check raises `ConfigError` (one line: key, value, what is accepted). All are
cheap: no torch, no MLflow, no model weights.
"""

from __future__ import annotations

import json
import os
import re
import socket
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ppo_exp.config import ConfigError

CONNECT_TIMEOUT_S = 3.0  # a tracking server or database that does not answer in this is down
HUB_HOST = "huggingface.co"
# A hub id is `name` or `org/name`; anything else (./x, /x, ~/x, a/b/c) is a local path.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


# --- checkpoints on disk ---------------------------------------------------------------


def checkpoint_config(key: str, path: str | None) -> dict | None:
    """The `config.json` of a local checkpoint at `path`; None for a hub id or None.

    Raises:
        ConfigError: `path` looks local (or exists) but is not a checkpoint directory.
    """
    if not path:
        return None
    local = Path(path).expanduser()
    accepted = "a directory saved with save_pretrained (holding config.json), or a hub id"
    if not local.exists():
        if _HUB_ID.match(path) and not path.startswith("."):
            _check_hub_id(key, path)
            return None
        raise ConfigError(key, path, f"{accepted}; {local} does not exist")
    config_file = local / "config.json"
    if not config_file.is_file():
        raise ConfigError(key, path, f"{accepted}; {config_file} is missing")
    try:
        return json.loads(config_file.read_text())
    except (OSError, ValueError) as error:
        raise ConfigError(key, path, f"{accepted}; {config_file} is unreadable: {error}") from None


def _check_hub_id(key: str, repo_id: str) -> None:
    """A hub id must be in the local Hugging Face cache, or the hub must be reachable."""
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(repo_id, "config.json"), str):
        return
    try:
        check_reachable(key, repo_id, HUB_HOST, 443)
    except ConfigError:
        raise ConfigError(
            key, repo_id, f"a local checkpoint directory, or a hub id; {repo_id!r} is not in "
            f"the local Hugging Face cache and {HUB_HOST} cannot be reached",
        ) from None


def check_paths(cfg: typing.Any) -> None:
    """Local model and reward checkpoints exist; `reward.label` names one of the classes.

    The gold scorer (`reward.gold`), when there is one, is checked the same way.
    """
    checkpoint_config("model.path", cfg.model.path)
    if cfg.model.value_model not in ("separate", "shared"):  # a critic checkpoint
        checkpoint_config("model.value_model", cfg.model.value_model)
    _check_classifier(cfg.reward, "reward")
    if getattr(cfg.reward, "gold", None) is not None:
        _check_classifier(cfg.reward.gold, "reward.gold")


def _check_classifier(reward: typing.Any, prefix: str) -> None:
    """A classifier reward's checkpoint exists and has the class `label` (else nothing)."""
    if reward.kind != "classifier":
        return
    found = checkpoint_config(f"{prefix}.path", reward.path)
    if found is None:
        return
    n_labels = len(found.get("id2label") or {}) or int(found.get("num_labels", 2))
    if not 0 <= reward.label < n_labels:
        raise ConfigError(f"{prefix}.label", reward.label, f"a class index in [0, {n_labels - 1}]")


# --- the tracking store ----------------------------------------------------------------

_DATABASES = ("postgresql", "mysql", "mssql")


def check_tracking_uri(uri: str, *, key: str = "mlflow.tracking_uri") -> None:
    """A known kind of MLflow store, and (for servers) one that accepts a connection.

    Args:
        uri: the effective tracking URI (the setting, $MLFLOW_TRACKING_URI or MLflow's
            default `sqlite:///mlflow.db`).
        key: the setting to name in the error.
    """
    parts = urlsplit(uri)
    scheme = parts.scheme.split("+")[0]
    accepted = (
        "a directory, file:PATH, sqlite:///FILE, http(s)://HOST[:PORT], "
        "postgresql|mysql|mssql://..., or databricks"
    )
    if scheme in ("", "file"):
        folder = Path(parts.path if scheme else uri).expanduser()
        parent = folder if folder.exists() else folder.parent
        if not parent.is_dir():
            raise ConfigError(key, mask(uri), f"{accepted}; folder {parent} does not exist")
    elif scheme == "sqlite":
        file = Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None
        if file is not None and not file.expanduser().resolve().parent.is_dir():
            raise ConfigError(
                key, mask(uri), f"{accepted}; folder {file.parent} does not exist"
            )
    elif scheme in ("http", "https", *_DATABASES):
        default_port = {"http": 80, "https": 443, "postgresql": 5432, "mysql": 3306}
        check_reachable(key, uri, parts.hostname, parts.port or default_port.get(scheme, 1433))
    elif scheme not in ("databricks", "databricks-uc", "uc"):
        raise ConfigError(key, mask(uri), accepted)


def check_reachable(key: str, uri: str, host: str | None, port: int) -> None:
    """A server at `host:port` accepts a TCP connection within CONNECT_TIMEOUT_S."""
    try:
        with socket.create_connection((host or "localhost", port), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as error:
        raise ConfigError(
            key,
            mask(uri),
            f"a reachable server; {host}:{port} did not accept a connection within "
            f"{CONNECT_TIMEOUT_S:g} s ({error.strerror or error})",
        ) from None


def effective_tracking_uri(configured: str | None) -> str:
    """What MLflow will use: the setting, else $MLFLOW_TRACKING_URI, else its default."""
    return configured or os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db"


# --- secrets ---------------------------------------------------------------------------

# Hydra escapes `:` in a sweep job's overrides (`https\://user\:pw@host`): masked too.
_USERINFO = re.compile(
    r"(?P<scheme>[A-Za-z][\w+.-]*\\?://)(?P<user>[^:/@\s\\]*)(?P<colon>\\?:)(?P<pw>[^@/\s]+)@"
)


def mask(text: str) -> str:
    """`text` with the password of every `scheme://user:password@host` replaced by ***."""
    return _USERINFO.sub(r"\g<scheme>\g<user>\g<colon>***@", text)


def mask_secrets(value: Any) -> Any:
    """`value` (a config as plain containers) with every string passed through `mask`."""
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, Mapping):
        return {k: mask_secrets(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [mask_secrets(v) for v in value]
    return value
