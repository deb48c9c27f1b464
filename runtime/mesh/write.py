"""Publishing a reconstruction: a new folder (runtime.outputs.write_folder: staged, renamed into place, never
overwriting) holding

    mesh.glb       binary glTF 2.0, vertex colours (COLOR_0)
    mesh.obj       Wavefront OBJ with per-vertex colours (``v x y z r g b``; Blender, MeshLab and trimesh read them)
    preview.png    a turntable of the mesh (runtime/mesh/preview.py)
    mesh.json      counts, seconds per stage, the cameras used and where they came from
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from ..outputs import write_folder, write_png
from .deps import require
from .preview import render_turntable
from .reconstruct import Reconstruction

FILES = ("mesh.glb", "mesh.obj", "preview.png", "mesh.json")


def write_mesh(rec: Reconstruction, output_dir, name: str, info: Optional[dict] = None) -> Path:
    """Write the files above into ``output_dir/name`` (or ``name_<k>``); returns the folder. Raises OutputError."""
    trimesh = require("trimesh")

    def fill(tmp: Path) -> None:
        mesh = rec.to_trimesh()
        mesh.export(tmp / "mesh.glb", file_type="glb")
        (tmp / "mesh.obj").write_text(trimesh.exchange.obj.export_obj(mesh, include_color=True,
                                                                      include_texture=False))
        write_png(tmp / "preview.png", render_turntable(rec.vertices, rec.faces, rec.colours))
        record = dict(info or {})
        record.update(vertices=int(len(rec.vertices)), faces=int(len(rec.faces)),
                      seconds={k: round(v, 4) for k, v in rec.seconds.items()})
        (tmp / "mesh.json").write_text(json.dumps(record, indent=1) + "\n")

    return write_folder(output_dir, name, fill)


__all__ = ["FILES", "write_mesh"]
