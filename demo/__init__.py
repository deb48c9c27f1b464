"""``python -m demo``: the whole path on a RANDOM-weight tiny SV3D model (demo/cli.py).

The demo makes a model and exports it, so it depends on models/ and export/ (MindSpore: the export extra) as well
as on runtime/; it is the one place that may, and nothing imports it (tests/test_imports.py).
"""
