"""What the files a config refers to contained, kept with the config that named them.

``policies_file`` and ``pricing_overrides_file`` are read once, when the config is loaded (so a
bad file is reported like any other config error, before anything changes), and their content
travels with that config object. Its own module because the root config holds it and the file
reader needs the root config: this breaks the cycle.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from apikeyrouter.domain.models.cost_model import ModelPrice
from apikeyrouter.domain.models.policy import Policy


@dataclass(frozen=True, slots=True)
class ConfigFiles:
    """Policies from ``policies_file``, prices from ``pricing_overrides_file``, and the paths
    read (absolute), which the config watcher also watches."""

    policies: tuple[Policy, ...] = ()
    pricing: Mapping[str, ModelPrice] = field(default_factory=dict)
    paths: tuple[Path, ...] = ()


NO_FILES = ConfigFiles()
