"""Configuration: a YAML file plus ``APIKEYROUTER_*`` environment variables, validated once."""

from apikeyrouter_proxy.config.loader import config_from_environment, load_config, load_config_text
from apikeyrouter_proxy.config.schema import (
    AuthConfig,
    CircuitConfig,
    ClientConfig,
    KeyConfig,
    LoggingConfig,
    ModelGroupConfig,
    ProviderConfig,
    RoutingConfig,
    ServerConfig,
    TracingConfig,
)
from apikeyrouter_proxy.config.settings import CONFIG_PATH_ENV, ProxyConfig
from apikeyrouter_proxy.config.yaml_source import ConfigError, ConfigIssue

__all__ = [
    "CONFIG_PATH_ENV",
    "AuthConfig",
    "CircuitConfig",
    "ClientConfig",
    "ConfigError",
    "ConfigIssue",
    "KeyConfig",
    "LoggingConfig",
    "ModelGroupConfig",
    "ProviderConfig",
    "ProxyConfig",
    "RoutingConfig",
    "ServerConfig",
    "TracingConfig",
    "config_from_environment",
    "load_config",
    "load_config_text",
]
