"""Station configuration: pydantic models of the station TOML file, units, secrets, plugins.

Imports nothing of fieldstation above it. Load a file with :func:`load_config`; the embedded
default station is :func:`default_config`.
"""

from fieldstation.config.defaults import default_config, template_text
from fieldstation.config.station import (
    ConfigError,
    ConfigIssue,
    StationConfig,
    config_data,
    config_hash,
    load_config,
    parse_config,
    station_model,
)

__all__ = [
    "ConfigError",
    "ConfigIssue",
    "StationConfig",
    "config_data",
    "config_hash",
    "default_config",
    "load_config",
    "parse_config",
    "station_model",
    "template_text",
]
