"""The exporter's configuration: YAML validated up front, frozen, every problem at once.

``schema`` holds the keys and their defaults (its docstring shows the whole file),
``values`` the value types, ``problems`` the error reporting and YAML loading, and
``credentials`` where ModelArts credentials come from.
"""

from .credentials import Credentials, resolve_credentials
from .load import load_config
from .problems import ConfigError, load_yaml, problem_line
from .schema import (
    DEFAULT_LISTEN_ADDRESS,
    DEFAULT_STATE_PATH,
    Config,
    default_config,
)
from .values import parse_external_url, parse_listen_address, readable_file

__all__ = [
    "DEFAULT_LISTEN_ADDRESS",
    "DEFAULT_STATE_PATH",
    "Config",
    "ConfigError",
    "Credentials",
    "default_config",
    "load_config",
    "load_yaml",
    "parse_external_url",
    "parse_listen_address",
    "problem_line",
    "readable_file",
    "resolve_credentials",
]
