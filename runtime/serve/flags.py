"""``python -m runtime``'s flags, reused by the service: a job's form fields and the server's engine flags are
parsed by runtime.cli's own parser (types, choices, nargs) and checked by its own checks, so the service refuses
exactly what the command line refuses, with the same message.

- A job's form fields are named as the per-image flags without the dashes (``steps``, ``seed``, ``min_scale``,
  ``elevation`` ...: :data:`JOB_FIELDS`); :func:`job_argv` turns them into flags, :func:`job_options` parses and
  checks them (runtime.cli.check_options; against the export: runtime.cli.generation_options). An empty field
  means "not given" (the export's default), as a browser sends an empty input.
- The server's engine flags (``--backend``, ``--device``, ``--threads``, ``--memory`` ...: :data:`ENGINE_FIELDS`)
  are the command line's too (:func:`engine_options`).
"""
from __future__ import annotations

import argparse
import re
from typing import List, Mapping, Sequence

from ..cli import Options, build_parser, check_bounds, check_options
from ..errors import SV3DError

JOB_FIELDS = ("steps", "seed", "guider", "min_scale", "max_scale", "elevation", "azimuths", "orbit",
              "remove_background", "fps")
ENGINE_FIELDS = ("graphs", "backend", "device", "device_id", "threads", "precision", "cache_dir", "memory",
                 "skip_checksums")
IMAGE_FIELD = "image"
CALLBACK_FIELD = "callback_url"
FORM_FIELDS = (IMAGE_FIELD, CALLBACK_FIELD) + JOB_FIELDS
NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


class OptionsError(SV3DError):
    """Options that are unknown, given twice, or refused by the command line's checks."""


def _refuse(message: str):
    raise OptionsError(f"invalid options: {message}")


def _parser() -> argparse.ArgumentParser:
    parser = build_parser()
    parser.error = _refuse                       # argparse would print its usage and exit the server
    return parser


MULTI_VALUED = frozenset(a.dest for a in _parser()._actions if a.nargs == "+")     # elevation, azimuths


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def job_argv(fields: Mapping[str, List[str]]) -> List[str]:
    """A job's fields ({name: values}) as the command line's flags, e.g. ``["--steps=4", "--elevation", "10"]``."""
    unknown = sorted(set(fields) - set(JOB_FIELDS))
    if unknown:
        raise OptionsError("unknown options", expected=f"form fields among {list(FORM_FIELDS)}", got=unknown)
    argv: List[str] = []
    for name in JOB_FIELDS:
        values = [v.strip() for v in fields.get(name, ()) if v.strip()]
        if not values:
            continue
        if name in MULTI_VALUED:                 # "10 20", "10,20" or the field repeated
            numbers = [p for v in values for p in v.replace(",", " ").split()]
            bad = [p for p in numbers if not NUMBER.fullmatch(p)]
            if bad:
                raise OptionsError(f"invalid {name}", expected="numbers separated by spaces or commas", got=bad)
            argv += [flag(name)] + numbers
        elif len(values) > 1:
            raise OptionsError(f"{name} given {len(values)} times", expected="once", got=values)
        else:
            argv.append(f"{flag(name)}={values[0]}")     # one token: a value never reads as another flag
    return argv


def parse_flags(argv: Sequence[str], allowed: Sequence[str], given: Sequence[str] = ()) -> Options:
    """Parse ``given + argv`` with the command line's parser; refuse ``argv`` setting a field outside ``allowed``."""
    opts = _parser().parse_args(list(given) + list(argv))
    base = _parser().parse_args(list(given))
    moved = [flag(k) for k in vars(base) if k not in allowed and getattr(opts, k) != getattr(base, k)]
    if moved:
        raise OptionsError("options not accepted here", expected=f"only {[flag(k) for k in allowed]}", got=moved)
    return opts


def job_options(argv: Sequence[str], image: str, graphs: str) -> Options:
    """A job's flags parsed and checked as the command line does (the export-free checks)."""
    opts = parse_flags(argv, JOB_FIELDS, [image, "--graphs", graphs])
    check_options(opts)
    return opts


def engine_options(argv: Sequence[str]) -> Options:
    """The server's --graphs and engine flags, parsed and bounded as the command line does."""
    opts = parse_flags(argv, ENGINE_FIELDS)
    check_bounds(opts)
    if opts.graphs is None:
        raise OptionsError("no export given", expected="--graphs DIR", got="none")
    return opts


__all__ = ["CALLBACK_FIELD", "ENGINE_FIELDS", "FORM_FIELDS", "IMAGE_FIELD", "JOB_FIELDS", "OptionsError",
           "engine_options", "job_argv", "job_options"]
