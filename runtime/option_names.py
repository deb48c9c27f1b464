"""How a caller spells each option, so that an error names the option as the caller wrote it.

The Python API's names are the defaults (``num_steps`` is ``number of steps``, ``threads`` is ``threads``); the
command line passes its flags (runtime.cli.FLAGS: ``--steps``, ``--threads``, ``--skip-checksums`` ...). Both the
generation options (runtime.options) and the run options (runtime.run_options) take one of these.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class OptionNames:
    # what to generate (runtime.options.resolve_options)
    steps: str = "number of steps"
    seed: str = "seed"
    guider: str = "guider"
    min_scale: str = "min_scale"
    max_scale: str = "max_scale"
    elevation: str = "elevation"
    azimuths: str = "azimuths"
    # how to run the graphs (runtime.run_options.RunOptions)
    backend: str = "backend"
    device: str = "device"
    device_id: str = "device_id"
    threads: str = "threads"
    precision: str = "precision"
    cache_dir: str = "cache_dir"
    memory: str = "memory"
    verify_checksums: str = "verify_checksums"
    memory_reuse: str = "memory_reuse"
    cpu_mem_arena: str = "cpu_mem_arena"

    def spell(self, option: str, value) -> str:
        """An option with its value as the caller would write it: ``--precision bf16`` or ``precision='bf16'``."""
        name = getattr(self, option)
        return f"{name} {value}" if name.startswith("-") else f"{name}={value!r}"


API_NAMES = OptionNames()

__all__ = ["API_NAMES", "OptionNames"]
