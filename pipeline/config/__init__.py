"""Configuration: the TOML file, validated on load. The only module (with the CLI) that reads
the environment."""

from __future__ import annotations

from pipeline.config.load import (
    Config,
    Secrets,
    config_error,
    format_path,
    load_config,
    to_subscriber,
)
from pipeline.config.models import ConfigFile, SourceConfig, SubscriberConfig

__all__ = [
    "Config",
    "ConfigFile",
    "Secrets",
    "SourceConfig",
    "SubscriberConfig",
    "config_error",
    "format_path",
    "load_config",
    "to_subscriber",
]
