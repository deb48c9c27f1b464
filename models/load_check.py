"""Validate an official-layout checkpoint against a config and load it into the Cells, reporting time and memory.

    python -m models.load_check --config sv3d_u --checkpoint sv3d_u.safetensors [--components unet,clip]
"""
import sys
import time
from dataclasses import dataclass, field
from typing import Optional

from configs import load_config
from configs.errors import SV3DError
from runtime.peak_rss import peak_rss_bytes
from .checkpoint import CheckpointReader, loaded_component, skipped_tensors
from .components import COMPONENTS


def load_check(config: str, checkpoint: str, components=tuple(COMPONENTS)) -> dict:
    cfg = load_config(config)
    t0 = time.perf_counter()
    reader = CheckpointReader(checkpoint, cfg, components)
    report = {"config": cfg.name, "checkpoint": checkpoint, "tensors_in_file": len(reader.header.tensors),
              "skipped_by_name": len(skipped_tensors(reader.header, cfg)), "dtypes": reader.header.dtypes(),
              "components": {}}
    cells = {}
    for comp in components:
        t = time.perf_counter()
        cells[comp] = cell = loaded_component(reader, comp)
        report["components"][comp] = {"parameters": sum(int(p.size) for p in cell.get_parameters()),
                                      "load_s": round(time.perf_counter() - t, 2)}      # build + load
    report["total_s"] = round(time.perf_counter() - t0, 2)
    report["peak_rss_gib"] = round(peak_rss_bytes() / 2**30, 2)
    return report


@dataclass
class Options:
    config: str = field(metadata=dict(args=["-c", "--config"], help="bundled config name or YAML path"))
    checkpoint: str = field(metadata=dict(args=["-k", "--checkpoint"], help="official-layout .safetensors"))
    components: str = field(default=",".join(COMPONENTS),
                            metadata=dict(help=f"comma-separated subset of {','.join(COMPONENTS)}"))


def main(argv: Optional[list] = None) -> int:
    from argparse_dataclass import ArgumentParser

    opts = ArgumentParser(Options, description=__doc__.split("\n")[0]).parse_args(argv)
    comps = tuple(c for c in opts.components.split(",") if c)
    bad = [c for c in comps if c not in COMPONENTS]
    if bad:
        print(f"error: unknown component(s) {bad}; expected some of {list(COMPONENTS)}", file=sys.stderr)
        return 2
    try:
        report = load_check(opts.config, opts.checkpoint, comps)
    except SV3DError as e:                     # a bad config or checkpoint
        print(f"error: {e}", file=sys.stderr)
        return 2
    for comp, r in report["components"].items():
        print(f"{comp:12s} {r['parameters']:>14,} parameters  build and load {r['load_s']:6.2f} s")
    print(f"total {report['total_s']:.1f} s, peak RSS {report['peak_rss_gib']:.2f} GiB, "
          f"{report['skipped_by_name']} unused tensors skipped by name, file dtypes {report['dtypes']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
