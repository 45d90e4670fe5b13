"""What a reload changed, and which of it can change while the exporter runs.

A reload applies the new rules and every setting of ``collect``, ``discovery``,
``lifecycle``, ``platform``, ``rules`` and ``web.config_file`` at once. The settings in
``RESTART_ONLY`` (where ModelArts is and how to log in, the state file, the listen
address and external URL, the shard) keep their old values until a restart; the reload says so.
"""

from __future__ import annotations

from typing import Any

from .schema import Config

RESTART_ONLY = ("modelarts", "state", "shard", "web.listen_address", "web.external_url")
"""Keys (and sections) whose new value takes effect only after a restart."""


def _flatten(value: Any, prefix: str, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(item, f"{prefix}.{key}" if prefix else str(key), out)
    else:
        out[prefix] = value


def changed_keys(old: Config, new: Config) -> list[str]:
    """The dotted keys whose values differ, sorted (values are compared, never shown)."""
    before: dict[str, Any] = {}
    after: dict[str, Any] = {}
    _flatten(old.model_dump(), "", before)
    _flatten(new.model_dump(), "", after)
    return sorted(key for key in before.keys() | after.keys() if before.get(key) != after.get(key))


def restart_only(key: str) -> bool:
    """Whether a changed ``key`` takes effect only after a restart."""
    return any(key == prefix or key.startswith(prefix + ".") for prefix in RESTART_ONLY)


def keep_restart_only(old: Config, new: Config) -> Config:
    """``new``, with the values of ``RESTART_ONLY`` taken from ``old``."""
    web = new.web.model_copy(
        update={"listen_address": old.web.listen_address, "external_url": old.web.external_url}
    )
    return new.model_copy(
        update={"modelarts": old.modelarts, "state": old.state, "shard": old.shard, "web": web}
    )
