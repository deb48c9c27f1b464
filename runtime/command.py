"""The one wrapper around the body of every command line (``python -m runtime``, ``python -m export``,
``python -m demo``, ``python -m runtime.mesh``, ``python -m runtime.serve``, ``python -m export.int8``): signals,
interruption and exit status.

:func:`run_command` installs the signal guard (runtime/interrupts.py), runs the body and turns what it raises into
one line on stderr and an exit status:

- Ctrl-C (SIGINT) or SIGTERM: the command's "interrupted: ..." line and 130 (143 for SIGTERM), also when a library
  turned the KeyboardInterrupt into an error of its own (MindSpore raises ValueError);
- an error the command expects (``rules``, first match wins; every user error derives from configs.errors.SV3DError):
  the rule's line and status;
- anything else propagates with its traceback: it is a bug, not a user's mistake.

The guard is released on every way out. Each command keeps its own statuses and messages (its docstring lists
them); only the handling is shared.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Callable, Sequence, Type

from . import interrupts


@dataclass(frozen=True)
class ExitRule:
    """An error class a command expects, the status it exits with, and its line (``{error}`` is the message)."""
    error: Type[BaseException]
    status: int
    line: str = "error: {error}"


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def run_command(body: Callable[[], int], *, interrupted: str, rules: Sequence[ExitRule]) -> int:
    """``body()``'s exit status, under the signal guard, with the errors in ``rules`` and an interruption turned
    into their line and status (module docstring)."""
    interrupts.reset()
    interrupts.guard()
    try:
        return body()
    except KeyboardInterrupt:
        _say(interrupted)
        return interrupts.exit_code()
    except Exception as e:
        if interrupts.interrupted():              # a library turned the KeyboardInterrupt into its own error
            _say(interrupted)
            return interrupts.exit_code()
        for rule in rules:
            if isinstance(e, rule.error):
                _say(rule.line.format(error=e))
                return rule.status
        raise
    finally:
        interrupts.release()


__all__ = ["ExitRule", "run_command"]
