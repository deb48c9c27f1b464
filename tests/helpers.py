"""What several test modules share: the repository root, relative-L2 comparison, manifest edits.

Test modules import from here and from tests/toy_graphs.py (the toy export); fixtures come from conftest.py; no
test module imports another.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from runtime.manifest import MANIFEST_NAME

REPO = Path(__file__).resolve().parents[1]


def rel_l2(a, b) -> float:
    """||a - b|| / ||b|| in float64."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise AssertionError(f"shape mismatch: got {a.shape}, reference {b.shape}")
    den = np.linalg.norm(b)
    return float(np.linalg.norm(a - b) / (den if den > 0 else 1.0))


def edit_manifest(folder, fn) -> None:
    """Apply ``fn`` to the manifest JSON of ``folder`` in place."""
    path = Path(folder) / MANIFEST_NAME
    d = json.loads(path.read_text())
    fn(d)
    path.write_text(json.dumps(d))


def read_keys_tsv(path) -> dict:
    """{tensor name: shape} from shared/reference/sv3d_{u,p}.keys.tsv (header line, then name, shape, dtype)."""
    out = {}
    for line in path.read_text().splitlines()[1:]:
        name, shape, _ = line.split("\t")
        out[name] = tuple(int(s) for s in shape.split(",")) if shape else ()
    return out
