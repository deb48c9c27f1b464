"""The generation service: ``python -m runtime.serve --graphs DIR`` (runtime/serve/cli.py).

The export's graphs are loaded once and stay resident; jobs are submitted over HTTP, queued in SQLite beside the
outputs, and run one at a time by a worker thread; a web page is served by the same process. ``--ray`` runs the
same app and worker as replicas of a Ray Serve deployment. Modules: settings.py (flags and folders), flags.py
(the command line's flags for jobs and the engine), upload.py (streamed multipart), jobs.py (the SQLite store),
worker.py, notify.py (callbacks), service.py (what the routes ask), app.py (FastAPI), ray_app.py, static/ (the
page). Importing this package loads no web stack: app.py and ray_app.py import FastAPI and Ray inside functions.
"""
