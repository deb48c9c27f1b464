"""Test double of a slower engine for the service's tests: with ``SV3D_TEST_UNET_DELAY_S`` set, every pipeline's
UNet call takes that much longer (a sleep before the real call; the numbers are unchanged).

The toy export's UNet step takes well under a millisecond, so a 1000-step job can end between two polls; the real
model's step takes seconds to minutes. Tests that act on a job mid-run (cancel it, kill its server or its Ray
replica, watch its progress bar) need it to last. tests/serving.py puts this folder on PYTHONPATH of the servers
it starts, so Python imports this module at start-up in the server and in every Ray replica it spawns; nothing
in runtime/ knows about it.
"""
import os

_DELAY = float(os.environ.get("SV3D_TEST_UNET_DELAY_S") or 0)

if _DELAY > 0:
    import time

    try:
        from runtime import pipeline as _pipeline
    except ImportError:                      # a Ray helper process without the repository on its path
        _pipeline = None

    class _SlowRunner:
        def __init__(self, runner):
            self._runner = runner

        def __getattr__(self, name):
            return getattr(self._runner, name)

        def run(self, feeds):
            time.sleep(_DELAY)
            return self._runner.run(feeds)

    if _pipeline is not None:
        _init = _pipeline.SV3DPipeline.__init__

        def _slow_init(self, *args, **kwargs):
            _init(self, *args, **kwargs)
            self.runners["unet"] = _SlowRunner(self.runners["unet"])

        _pipeline.SV3DPipeline.__init__ = _slow_init
