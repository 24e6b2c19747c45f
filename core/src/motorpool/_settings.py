"""Host settings: ``MOTORPOOL_*`` environment variables over a TOML config file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import ByteSize, Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

DEFAULT_HOME = Path("~/.motorpool")


def _home() -> Path:
    return Path(os.environ.get("MOTORPOOL_HOME", DEFAULT_HOME)).expanduser()


def config_file_path(home: Path | None = None) -> Path:
    """``MOTORPOOL_CONFIG``, or ``config.toml`` in the home (``MOTORPOOL_HOME`` by default)."""
    explicit = os.environ.get("MOTORPOOL_CONFIG")
    if explicit:
        return Path(explicit).expanduser()
    return (home or _home()).expanduser() / "config.toml"


class Settings(BaseSettings):
    """Everything the host reads at start. Each field is also ``MOTORPOOL_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="MOTORPOOL_", extra="forbid", frozen=True)

    home: Path = Field(default_factory=_home)
    """Where motorpool keeps its files (``MOTORPOOL_HOME``)."""
    plugins: str | None = None
    """Allow-list: unset = every installed plugin, empty = none, ``a,b`` = only those."""
    strict_plugins: bool = False
    """Fail start-up when any plugin fails to import or validate."""
    models_file: Path | None = None
    """TOML file of model aliases; default ``<home>/models.toml``."""
    model_dirs: Annotated[tuple[Path, ...], NoDecode] = ()
    """When set, local model paths must lie inside one of these folders (joined by ``:``)."""
    memory_budget: ByteSize | None = None
    """Bytes of models kept loaded at once (``16GB``); default 80% of physical memory."""
    max_loaded_models: int | None = Field(default=None, ge=1)
    keep_alive_s: float = 300.0
    """Idle seconds before a model is unloaded; negative = never."""
    max_queue: int = Field(default=64, ge=0)
    """Requests that may wait per model before new ones get ``queue_full``."""
    parallel: int | None = Field(default=None, ge=1)
    """At most this many requests run at once per model (default: what its engine allows)."""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "console", "json"] = "auto"

    # -- the server (``motorpool serve``) --
    bind: str = "127.0.0.1"
    """Address the server listens on; anything but loopback needs ``api_key``."""
    port: int = Field(default=8420, ge=0, le=65535)
    api_key: SecretStr | None = None
    """Clients must send ``Authorization: Bearer <key>``; required off loopback."""
    cors_origins: Annotated[tuple[str, ...], NoDecode] = ()
    """Origins allowed to call the server from a browser (joined by ``,``); none by default."""
    max_body_bytes: ByteSize = ByteSize(32 * 1024 * 1024)
    """Largest request body accepted (``413`` above it)."""
    biome_model: str | None = Field(default=None, min_length=1)
    """The model every Biome client's session runs on (``/ws``); unset = the one it names."""

    @field_validator("model_dirs", mode="before")
    @classmethod
    def _split_model_dirs(cls, value: object) -> object:
        if isinstance(value, str):  # the environment gives one string: a:b (a;b on Windows)
            return tuple(Path(part) for part in value.split(os.pathsep) if part)
        return value

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @property
    def models_path(self) -> Path:
        """The models file in effect."""
        return (self.models_file or self.home / "models.toml").expanduser()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Arguments, then the environment, then the config file."""
        del dotenv_settings, file_secret_settings
        given: dict[str, object] = (
            init_settings.init_kwargs  # pyright: ignore[reportUnknownMemberType]  # untyped dict in pydantic-settings
            if isinstance(init_settings, InitSettingsSource)
            else {}
        )
        home = given.get("home")
        toml_file = config_file_path(Path(str(home)) if home is not None else None)
        toml = TomlConfigSettingsSource(settings_cls, toml_file=toml_file)
        return (init_settings, env_settings, toml)
