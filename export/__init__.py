"""`python -m export`: an SV3D config + official checkpoint -> static-shape MindIR/ONNX graphs + manifest.json.

Importing this package does not import MindSpore; `export_graphs` does, after every option, the checkpoint and
the output folder have been checked (export/api.py).
"""
from .api import ExportResult, Plan, export_graphs, plan, run
from .errors import ExportError, ParityError
from .options import ExportOptions

__all__ = ["ExportError", "ExportOptions", "ExportResult", "ParityError", "Plan", "export_graphs", "plan", "run"]
