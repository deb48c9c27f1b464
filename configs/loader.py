"""Load an SV3D config from a YAML file or a bundled name (``sv3d_u``, ``sv3d_p``, ``sv3d_u_tiny``, ...)."""
from __future__ import annotations

from pathlib import Path
from typing import Union

from .schema import ConfigError, SV3DConfig, config_from_dict

CONFIG_DIR = Path(__file__).resolve().parent


def bundled_names() -> list:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def resolve_config_path(name_or_path: Union[str, Path]) -> Path:
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml"):
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        return p
    candidate = CONFIG_DIR / f"{name_or_path}.yaml"
    if candidate.is_file():
        return candidate
    raise ConfigError(f"unknown config {str(name_or_path)!r}: expected a .yaml path or one of {bundled_names()}")


def load_config(name_or_path: Union[str, Path]) -> SV3DConfig:
    import yaml  # lazy: the runtime rebuilds configs from manifest JSON without PyYAML

    path = resolve_config_path(name_or_path)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if data is None:
        raise ConfigError(f"{path}: empty config")
    cfg = config_from_dict(data, where=str(path))
    if not cfg.name:
        cfg = cfg.replace(name=path.stem)
    return cfg
