"""The client configuration the CLI writes (``vitrine signup``): a TOML file
with ``url`` and ``key``, at ``$VITRINE_CLIENT_CONFIG``, else
``$XDG_CONFIG_HOME/vitrine/client.toml``, else ``~/.config/vitrine/client.toml``.
``VITRINE_URL`` and ``VITRINE_KEY`` override it, as for the CLI."""

from __future__ import annotations

import json
import os
import pathlib
import sys
from typing import Optional, Tuple

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEFAULT_URL = "http://127.0.0.1:8080"


def config_path() -> pathlib.Path:
    """Where the CLI keeps its client configuration."""
    explicit = os.environ.get("VITRINE_CLIENT_CONFIG")
    if explicit:
        return pathlib.Path(explicit)
    base = os.environ.get("XDG_CONFIG_HOME")
    root = pathlib.Path(base) if base else pathlib.Path.home() / ".config"
    return root / "vitrine" / "client.toml"


def load(url: Optional[str] = None, key: Optional[str] = None) -> Tuple[str, Optional[str]]:
    """The server URL and API key: the arguments, else the environment, else
    the configuration file, else the default URL and no key."""
    stored: dict = {}
    path = config_path()
    if path.exists():
        with path.open("rb") as file:
            stored = tomllib.load(file)
    url = url or os.environ.get("VITRINE_URL") or stored.get("url") or DEFAULT_URL
    key = key or os.environ.get("VITRINE_KEY") or stored.get("key")
    return url.rstrip("/"), key


def pinned_log_key(origin: Optional[str] = None) -> Optional[str]:
    """The log key ``vitrine audit`` pinned (``audit-state.json`` beside the
    configuration): the one for ``origin``, or the only one."""
    path = config_path().with_name("audit-state.json")
    try:
        logs = json.loads(path.read_text()).get("logs", {})
    except (OSError, ValueError):
        return None
    if origin is not None:
        return logs.get(origin, {}).get("vkey")
    if len(logs) == 1:
        return next(iter(logs.values())).get("vkey")
    return None
