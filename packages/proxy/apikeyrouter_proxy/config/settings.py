"""The root of the configuration, and how the environment overrides the file.

``ProxyConfig(**file_data)`` layers ``APIKEYROUTER_*`` environment variables over the file's
values (``APIKEYROUTER_SERVER__PORT=9000`` sets ``server.port``): operators change one setting
per deployment without editing the file. ``ProxyConfig.model_validate(data)`` validates data
alone, with no environment, which is what tests and programmatic callers want.
"""

from __future__ import annotations

from apikeyrouter.domain.models.cost_model import Budget
from apikeyrouter.domain.models.policy import Policy
from apikeyrouter.utils.duplicates import repeated
from pydantic import Field, PrivateAttr, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from apikeyrouter_proxy.config.loaded import ConfigFiles
from apikeyrouter_proxy.config.schema import (
    AuthConfig,
    CircuitConfig,
    LoggingConfig,
    ModelGroupConfig,
    ProviderConfig,
    RoutingConfig,
    ServerConfig,
    StoreConfig,
    TracingConfig,
)

ENV_PREFIX = "APIKEYROUTER_"
CONFIG_PATH_ENV = "APIKEYROUTER_CONFIG"


class ProxyConfig(BaseSettings):
    """Everything the proxy needs to run. All sections have safe defaults (no keys, loopback)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        # Unrelated APIKEYROUTER_* variables (the master key, the config path) are not ours.
        env_ignore_empty=True,
    )

    server: ServerConfig = Field(default_factory=ServerConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    routing: RoutingConfig = Field(default_factory=RoutingConfig)
    circuit: CircuitConfig = Field(default_factory=CircuitConfig)
    providers: tuple[ProviderConfig, ...] = ()
    model_groups: tuple[ModelGroupConfig, ...] = ()
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    tracing: TracingConfig = Field(default_factory=TracingConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)
    policies: tuple[Policy, ...] = ()
    policies_file: str | None = Field(
        default=None, min_length=1, description="YAML/JSON policies, relative to this file."
    )
    budgets: tuple[Budget, ...] = ()
    pricing_overrides_file: str | None = Field(
        default=None, min_length=1, description="Prices replacing or adding to the shipped table."
    )
    #: What ``policies_file``/``pricing_overrides_file`` held when this config was loaded.
    _files: ConfigFiles | None = PrivateAttr(default=None)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # First wins: the environment overrides what the file (passed as init data) says.
        return (env_settings, init_settings)

    @model_validator(mode="after")
    def _unique_ids(self) -> ProxyConfig:
        duplicates = repeated(p.id for p in self.providers)
        if duplicates:
            raise ValueError(f"duplicate provider id(s): {', '.join(duplicates)}")
        duplicates = repeated(k.id for p in self.providers for k in p.keys if k.id is not None)
        if duplicates:
            raise ValueError(f"duplicate key id(s): {', '.join(duplicates)}")
        duplicates = repeated(g.name for g in self.model_groups)
        if duplicates:
            raise ValueError(f"duplicate model group(s): {', '.join(duplicates)}")
        return self

    def key_count(self) -> int:
        return sum(len(p.keys) for p in self.providers)

    @property
    def files(self) -> ConfigFiles | None:
        """The referenced files' content, once the loader has read them (else None)."""
        return self._files

    def with_files(self, files: ConfigFiles) -> ProxyConfig:
        copy = self.model_copy()
        copy._files = files
        return copy
