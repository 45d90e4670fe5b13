"""Reading a configuration file: the schema, then (optionally) the credentials."""

from __future__ import annotations

from collections.abc import Mapping
from os import PathLike
from pathlib import Path

from .credentials import resolve_credentials
from .problems import load_yaml
from .schema import Config, validate


def load_config(path: str | PathLike[str], environ: Mapping[str, str] | None = None) -> Config:
    """Read and validate a configuration file; ConfigError lists every problem.

    With ``environ``, credentials are resolved too (see :func:`resolve_credentials`), so
    that missing or partial credentials fail at load time like any other mistake.
    """
    path = Path(path)
    config = validate(load_yaml(path), path, path.parent.absolute())
    if environ is not None:
        resolve_credentials(config, environ)
    return config
