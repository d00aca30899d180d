"""Configuration: a TOML file validated against a declarative schema.

>>> from firmware_py.config import load
>>> cfg = load(None)          # the embedded default
>>> cfg.camera.backend
'replay'
"""

from firmware_py.config.loader import get_value, load, parse_value, validate, with_changes
from firmware_py.config.model import Config
from firmware_py.config.schema import ConfigError, Problem

__all__ = ["Config", "ConfigError", "Problem", "get_value", "load", "parse_value", "validate", "with_changes"]
