"""Every SV3D constant, typed and validated (see schema.py); YAML files per variant beside this module."""
from .loader import bundled_names, load_config, resolve_config_path
from .schema import (GUIDERS, VARIANTS, CLIPConfig, ConditionerConfig, ConfigError, GuiderConfig, RuntimeConfig,
                     SamplerConfig, SV3DConfig, UNetConfig, VAEConfig, config_from_dict, runtime_config_from_dict,
                     validate)

__all__ = ["CLIPConfig", "ConditionerConfig", "ConfigError", "GUIDERS", "GuiderConfig", "RuntimeConfig",
           "SamplerConfig", "SV3DConfig", "UNetConfig", "VAEConfig", "VARIANTS", "bundled_names", "config_from_dict", "load_config",
           "resolve_config_path", "runtime_config_from_dict", "validate"]
