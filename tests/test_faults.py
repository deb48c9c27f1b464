"""Fault suite (issues 9 and 18): interruption (MindSpore's import included), killed parents and workers, tampered
and escaping manifests, bounds (--threads by the machine), unwritable and full outputs, corrupt images and
checkpoints, errors that name their cause -- through both command lines, and the Python API given what the CLI
refuses (section 7).

Every test asserts the exit status, the message, that nothing partial is left (no staging folder, no output
folder, no MindSpore ``rank_0/`` debug folder in the working directory) and that no process is left behind.
Commands run in a subprocess with a fresh working directory (``tmp_path / "cwd"``) so stray writes show up.
"""
from __future__ import annotations

import contextlib
import json
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from configs.limits import LIMITS, usable_cpus
from tests.helpers import REPO

RESOLUTION = "64"
TIMEOUT = 120


# ------------------------------------------------------------------------------------------------- helpers


def ckpt(oracle: Path, variant: str = "sv3d_u") -> Path:
    return oracle / f"{variant}_tiny" / "checkpoint.safetensors"


def _env() -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    for k in ("MS_DEV_SAVE_GRAPHS_PATH", "MS_OM_PATH"):
        env.pop(k, None)
    return env


def _cwd(tmp_path: Path) -> Path:
    d = tmp_path / "cwd"
    d.mkdir(exist_ok=True)
    return d


def run_cli(module: str, args, tmp_path: Path, timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=_cwd(tmp_path), env=_env(),
                          capture_output=True, text=True, timeout=timeout)


def start_cli(module: str, args, tmp_path: Path, log: Path, **env) -> subprocess.Popen:
    """A CLI in its own session (so a signal can go to its whole process group, as Ctrl-C does), stderr to
    `log` for polling; `env`: extra environment variables."""
    f = open(log, "w")
    try:
        return subprocess.Popen([sys.executable, "-m", module, *map(str, args)], cwd=_cwd(tmp_path),
                                env=dict(_env(), **env), stdout=subprocess.DEVNULL, stderr=f, start_new_session=True)
    finally:
        f.close()


@contextlib.contextmanager
def cli_session(module: str, args, tmp_path: Path, log: Path, **env):
    """start_cli, and its whole process group killed on the way out if it still runs (a failed test too)."""
    proc = start_cli(module, args, tmp_path, log, **env)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def interrupt(proc: subprocess.Popen, sig: int = signal.SIGINT) -> int:
    """`sig` to the CLI's whole process group, as Ctrl-C sends it; its exit status."""
    os.killpg(proc.pid, sig)
    return proc.wait(timeout=60)


def wait_for(pred, timeout: float, what: str, proc: subprocess.Popen = None, log: Path = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(0.05)
    tail = log.read_text()[-2000:] if log is not None and log.exists() else ""
    raise AssertionError(f"timed out waiting for {what} (rc {proc.poll() if proc else None}): {tail}")


def children_of(pid: int) -> list:
    """Every live descendant of `pid` (from /proc)."""
    parents = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(d.name)] = int(fields[1])
    out, frontier = [], [pid]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parents.items() if pp == p]
        out += kids
        frontier += kids
    return out


def worker_of(proc: subprocess.Popen):
    """The id of an export worker process of `proc` (multiprocessing's spawn, not its resource tracker), or None."""
    for pid in children_of(proc.pid):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in cmd and b"resource_tracker" not in cmd:
            return pid
    return None


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")                   # a zombie has ended; only its parent's wait is missing


def assert_no_processes(pids, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.05)
    left = [p for p in pids if alive(p)]
    for p in left:                                   # leave the machine clean even when the test fails
        try:
            os.kill(p, signal.SIGKILL)
        except OSError:
            pass
    assert not left, f"processes left behind: {left}"


def assert_nothing_partial(tmp_path: Path, out: Path) -> None:
    assert not out.exists() or list(out.iterdir()) == [], f"partial output: {list(out.rglob('*'))[:10]}"
    parent = out.parent
    if parent.is_dir():
        staged = [p.name for p in parent.iterdir() if p.name.startswith(f".{out.name}.")]
        assert not staged, f"staging or temporary folders left: {staged}"
    cwd = _cwd(tmp_path)
    assert not (cwd / "rank_0").exists(), "MindSpore wrote debug files into the working directory"
    assert list(cwd.iterdir()) == [], f"files written into the working directory: {list(cwd.iterdir())}"


def one_error(stderr: str, *needles: str) -> str:
    assert "Traceback" not in stderr, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert errors, stderr[-3000:]
    text = "\n".join(stderr.splitlines()[stderr.splitlines().index(errors[0]):])
    for n in needles:
        assert n in text, text
    return text


def export_args(oracle: Path, out: Path, *extra) -> list:
    return ["-c", "sv3d_u_tiny", "-k", ckpt(oracle), "-o", out, "--resolution", RESOLUTION, *extra]


# ------------------------------------------------------------------------------------------------- toy export


@pytest.fixture(scope="module")
def toy(toy_export):
    return toy_export[0]


def image() -> str:
    from runtime.sample_data import sample_image_path

    return str(sample_image_path())


# ---------------------------------------------------------------------------- 1, 2. interruption (Ctrl-C, TERM)


@pytest.mark.export
@pytest.mark.parametrize("isolate, sig", [("off", signal.SIGINT), ("on", signal.SIGINT), ("off", signal.SIGTERM)])
def test_export_interrupted_after_mindspore_ran(oracle, tmp_path, isolate, sig):
    """Ctrl-C (to the whole process group, workers included) once MindSpore has compiled and run a graph, i.e.
    after it replaced the SIGINT handler: exit 130 (143 for SIGTERM), the message, no staging folder, no
    rank_0/ in the working directory, no process left."""
    out, log = tmp_path / "out", tmp_path / "stderr.txt"
    with cli_session("export", export_args(oracle, out, "--isolate", isolate, "--parity", "full"), tmp_path,
                     log) as proc:
        # the clip_encoder checks ran its MindIR in a GraphCell: MindSpore's handler is in place from here on
        wait_for(lambda: "[2/4] vae_encoder" in log.read_text(), 90, "the second graph", proc, log)
        if isolate == "on":                        # and the vae_encoder step's worker is running
            wait_for(lambda: worker_of(proc), 90, "a worker process", proc, log)
        kids = children_of(proc.pid)
        rc = interrupt(proc, sig)
    err = log.read_text()
    assert rc == 128 + sig, (rc, err[-3000:])
    assert "interrupted: nothing was published" in err and "Traceback" not in err, err[-3000:]
    assert_nothing_partial(tmp_path, out)
    assert_no_processes(kids + [proc.pid])


@pytest.mark.parametrize("backend", ["mindspore", "onnxruntime"])
def test_runtime_interrupted_while_sampling(toy, tmp_path, backend):
    """Ctrl-C in the middle of a run of many images (the toy graphs are fast): exit 130, the message; results
    finished before it are complete, nothing half-written is left."""
    from runtime.outputs import TMP_PREFIX

    out, log = tmp_path / "out", tmp_path / "stderr.txt"
    with cli_session("runtime", ["--graphs", toy, *[image()] * 500, "-o", out, "--backend", backend,
                                 "--steps", "200"], tmp_path, log) as proc:
        wait_for(lambda: "graphs loaded" in log.read_text(), 90, "the graphs to load", proc, log)
        wait_for(lambda: out.is_dir() and len(list(out.iterdir())) >= 2, 60, "the first results", proc, log)
        kids = children_of(proc.pid)
        rc = interrupt(proc)
    err = log.read_text()
    assert rc == 130, (rc, err[-3000:])
    assert "interrupted: nothing partial was written" in err and "Traceback" not in err, err[-3000:]
    folders = list(out.iterdir())
    assert not [p for p in folders if p.name.startswith(TMP_PREFIX)], "a half-written result was left"
    assert all((p / "info.json").is_file() for p in folders)
    shutil.rmtree(out)
    assert_nothing_partial(tmp_path, out)
    assert_no_processes(kids)


# PYTHONPROFILEIMPORTTIME lines: MindSpore's C extension is loaded (about a second of `import mindspore` still to
# go), and the whole package is
MINDSPORE_C_IMPORTED = re.compile(r"^import time:.*\|\s+mindspore\._c_expression$", re.M)
MINDSPORE_IMPORTED = re.compile(r"^import time:.*\|\s+mindspore$", re.M)


def _interrupt_mindspore_import(module: str, args, tmp_path: Path):
    """Start a CLI, wait until MindSpore's C extension is imported (the import still running), Ctrl-C its
    process group: (exit status, stderr without the import-time lines)."""
    pytest.importorskip("mindspore")
    log = tmp_path / "stderr.txt"
    with cli_session(module, args, tmp_path, log, PYTHONPROFILEIMPORTTIME="1") as proc:
        wait_for(lambda: MINDSPORE_C_IMPORTED.search(log.read_text()), 90, "MindSpore's import", proc, log)
        assert not MINDSPORE_IMPORTED.search(log.read_text()), "the import finished before the signal"
        rc = interrupt(proc)
    err = "\n".join(line for line in log.read_text().splitlines() if not line.startswith("import time:"))
    return rc, err


def test_export_interrupted_while_mindspore_imports(oracle, tmp_path):
    """Ctrl-C while the export imports MindSpore (its first ~1.5 s): exit 130 and the one line, not "Fatal Python
    error" and exit 134 from the exit hook of a half-imported MindSpore."""
    out = tmp_path / "out"
    rc, err = _interrupt_mindspore_import("export", export_args(oracle, out, "--formats", "onnx"), tmp_path)
    assert rc == 130, (rc, err[-3000:])
    assert "interrupted: nothing was published" in err, err[-3000:]
    assert "Fatal Python error" not in err and "Traceback" not in err, err[-3000:]
    assert_nothing_partial(tmp_path, out)


def test_runtime_interrupted_while_mindspore_imports(toy, tmp_path):
    """The same for `python -m runtime --backend mindspore` while it loads the graphs."""
    out = tmp_path / "out"
    rc, err = _interrupt_mindspore_import("runtime", ["--graphs", toy, image(), "-o", out, "--backend",
                                                      "mindspore", "--steps", "1"], tmp_path)
    assert rc == 130, (rc, err[-3000:])
    assert "interrupted: nothing partial was written" in err, err[-3000:]
    assert "Fatal Python error" not in err and "Traceback" not in err, err[-3000:]
    assert_nothing_partial(tmp_path, out)


@pytest.mark.parametrize("backend, made", [("onnxruntime", False), ("mindspore", True)])
def test_mindspore_debug_folder_only_with_mindspore(toy, tmp_path, backend, made):
    """The temporary folder for MindSpore's dumps exists (while the run does) only when MindSpore runs, so a
    SIGKILLed onnxruntime run leaves nothing in $TMPDIR; either way it is gone after a normal exit."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    out, log = tmp_path / "out", tmp_path / "stderr.txt"
    with cli_session("runtime", ["--graphs", toy, *[image()] * 50, "-o", out, "--backend", backend, "--steps",
                                 "50"], tmp_path, log, TMPDIR=str(tmp)) as proc:
        wait_for(lambda: "graphs loaded" in log.read_text(), 90, "the graphs to load", proc, log)
        debug = list(tmp.glob("sv3d-mindspore-debug-*"))
    assert bool(debug) == made, debug
    shutil.rmtree(tmp)                               # what the SIGKILL left
    tmp.mkdir()
    with cli_session("runtime", ["--graphs", toy, image(), "-o", out, "--backend", backend, "--steps", "1",
                                 "--quiet"], tmp_path, log, TMPDIR=str(tmp)) as proc:
        assert proc.wait(timeout=TIMEOUT) == 0, log.read_text()[-3000:]
    assert not list(tmp.glob("sv3d-mindspore-debug-*"))


_UNRAISABLE_SCRIPT = r"""
import os, signal, subprocess, sys
from runtime import interrupts
interrupts.guard()
# A signal whose handler runs inside an at-fork handler (logging registers some; they run on every fork with a
# preexec_fn, and imageio-ffmpeg starts ffmpeg with preexec_fn=os.setpgrp for every video) cannot raise there:
# Python reports it as unraisable and drops it. That is what CI hit. Run the handler there directly, as the
# signal did, so the case is deterministic.
os.register_at_fork(after_in_parent=lambda: interrupts._on_signal(signal.SIGINT, None))
import logging  # noqa: F401  (its own at-fork handlers run first, as in the runtime)
subprocess.run([sys.executable, "-c", "pass"], check=True, preexec_fn=os.setpgrp)
sys.stderr.write("after fork\n")
try:
    interrupts.checkpoint()
except KeyboardInterrupt:
    sys.stderr.write("checkpoint raised\n")
    sys.exit(interrupts.exit_code())
sys.exit(3)
"""


def test_signal_during_an_at_fork_handler_is_not_lost_nor_printed(tmp_path):
    """The KeyboardInterrupt Python cannot raise inside an at-fork handler is kept (checkpoint raises it, exit
    130) and not printed as an "Exception ignored" traceback."""
    proc = subprocess.run([sys.executable, "-c", _UNRAISABLE_SCRIPT], cwd=_cwd(tmp_path), env=_env(),
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 130, (proc.returncode, proc.stderr)
    assert "checkpoint raised" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr, proc.stderr


def test_unraisable_hook_passes_other_errors_on_and_is_restored():
    """Only a recorded signal's KeyboardInterrupt is dropped; any other unraisable error still reaches the hook
    that was there before, and release() puts that hook back."""
    from runtime import interrupts

    seen = []
    before = sys.unraisablehook
    sys.unraisablehook = lambda info: seen.append(type(info.exc_value))
    try:
        interrupts.reset()
        interrupts.guard()
        try:
            class Raises:
                def __init__(self, exc):
                    self.exc = exc

                def __del__(self):
                    raise self.exc

            Raises(ValueError("x"))                  # reaches the previous hook
            Raises(KeyboardInterrupt())              # no signal recorded: reaches it too
            interrupts._state["received"] = signal.SIGINT
            Raises(KeyboardInterrupt())              # a recorded signal: dropped
            assert seen == [ValueError, KeyboardInterrupt]
            with pytest.raises(KeyboardInterrupt):
                interrupts.checkpoint()
        finally:
            interrupts.release()
            interrupts.reset()
        assert sys.unraisablehook is not interrupts._unraisable
    finally:
        sys.unraisablehook = before


# --------------------------------------------------------------------------------------- 3. killed processes


@pytest.mark.export
def test_sigkill_of_export_parent_leaves_no_worker(oracle, tmp_path):
    out, log = tmp_path / "out", tmp_path / "stderr.txt"
    proc = start_cli("export", export_args(oracle, out, "--isolate", "on", "--parity", "off"), tmp_path, log)
    try:
        # a worker (and multiprocessing's resource_tracker) exists while a step runs
        kids = wait_for(lambda: children_of(proc.pid) if len(children_of(proc.pid)) >= 2 else None, 90,
                        "a worker process", proc, log)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert_no_processes(kids, timeout=LIMITS.worker_parent_poll_s * 4 + 5)
    assert not out.exists()
    from export import staging                      # what SIGKILL leaves, the next export removes
    staging.remove_stale(out)
    assert_nothing_partial(tmp_path, out)


@pytest.mark.export
def test_sigkill_of_export_worker_fails_cleanly(oracle, tmp_path):
    out, log = tmp_path / "out", tmp_path / "stderr.txt"
    proc = start_cli("export", export_args(oracle, out, "--isolate", "on", "--parity", "off"), tmp_path, log)
    try:
        pid = wait_for(lambda: worker_of(proc), 90, "a worker process", proc, log)
        os.kill(pid, signal.SIGKILL)
        rc = proc.wait(timeout=60)
        kids = children_of(proc.pid)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = log.read_text()
    assert rc == 1, (rc, err[-3000:])
    one_error(err, "died without an answer", "nothing was published")
    assert_nothing_partial(tmp_path, out)
    assert_no_processes(kids + [pid])


# ----------------------------------------------------------------------------------------------- 4. bounds


@pytest.mark.parametrize("flags, needle", [
    (["--steps", "10000000000"], f"invalid --steps: expected an integer in [1, {LIMITS.max_steps}]"),
    (["--steps", "100000"], f"invalid --steps: expected an integer in [1, {LIMITS.max_steps}]"),
    (["--steps", "0"], "invalid --steps"),
    (["--min-scale", "3", "--max-scale", "1"], "expected --min-scale <= --max-scale"),
    (["--min-scale", "-1"], "invalid --min-scale: expected a number in [0,"),
    (["--max-scale", "1e9"], "invalid --max-scale"),
    (["--min-scale", "3"], "expected --min-scale <= --max-scale"),           # against the export's max 2.5
    (["--fps", "100000"], "invalid --fps"),
    (["--threads", "99999999"], "invalid --threads"),
    (["--threads", "1000"], f"invalid --threads: expected an integer in [0, {usable_cpus()}]"),    # the machine's
    (["--threads", str(usable_cpus() + 1)], "the CPUs this process may use"),
])
def test_runtime_bounds(toy, tmp_path, flags, needle):
    out = tmp_path / "out"
    t0 = time.monotonic()
    r = run_cli("runtime", ["--graphs", toy, image(), "-o", out, *flags], tmp_path)
    assert r.returncode == 1, r.stderr
    one_error(r.stderr, needle)
    assert time.monotonic() - t0 < 30                  # refused before any work
    assert_nothing_partial(tmp_path, out)


@pytest.mark.parametrize("backend, flags, needle", [
    ("onnxruntime", ["--precision", "bf16"], "the onnxruntime backend cannot honour --precision bf16"),
    ("onnxruntime", ["--cache-dir", "cache"], "the onnxruntime backend cannot honour --cache-dir cache"),
    ("mindspore", ["--precision", "bf16"], "the mindspore backend cannot honour --precision bf16"),
    ("mindspore", ["--cache-dir", "cache"], "the mindspore backend cannot honour --cache-dir cache"),
    ("mindspore", ["--threads", "1"], "the mindspore backend cannot honour --threads 1"),
    ("mindspore", ["--threads", "1", "--cache-dir", "cache"], "cannot honour --threads 1, --cache-dir cache"),
])
def test_runtime_refuses_what_its_backend_cannot_honour(toy, tmp_path, backend, flags, needle):
    """An engine option the backend cannot apply is an error naming the option and the backend (exit 1, before
    any graph loads), never silently ignored; the error says what the backend honours and which backend would."""
    from runtime.backends import backend_available

    ok, why = backend_available(backend)
    if not ok:
        pytest.skip(f"{backend}: {why}")
    out = tmp_path / "out"
    r = run_cli("runtime", ["--graphs", toy, image(), "-o", out, "--backend", backend, *flags], tmp_path)
    assert r.returncode == 1, r.stderr
    one_error(r.stderr, needle, f"expected what {backend} honours: precision auto | f32")
    assert "(use --backend openvino" in r.stderr or " or --backend openvino" in r.stderr   # it honours them all
    assert "loading" in r.stderr and "graphs loaded" not in r.stderr
    assert not (_cwd(tmp_path) / "cache").exists()
    assert_nothing_partial(tmp_path, out)


@pytest.mark.parametrize("flags, needle", [
    (["--resolution", "100000"], f"expected at most {LIMITS.max_resolution}"),
    (["--attention-chunk", str(LIMITS.max_attention_chunk + 1)], "--attention-chunk is too large"),
])
def test_export_bounds(oracle, tmp_path, flags, needle):
    out = tmp_path / "out"
    r = run_cli("export", ["-c", "sv3d_u_tiny", "-k", ckpt(oracle), "-o", out, *flags], tmp_path)
    assert r.returncode == 2, r.stderr
    one_error(r.stderr, needle)
    assert_nothing_partial(tmp_path, out)


def test_api_bounds():
    """The bounds are checked at the edge, where the Python API takes the options (runtime.options), not in the
    math: sampling.py and guidance.py know no policy (issue 18, validate once)."""
    from configs import load_config
    from runtime.errors import SV3DError
    from runtime.guidance import guidance_scales
    from runtime.options import resolve_options

    cfg = load_config("sv3d_u_tiny")
    with pytest.raises(SV3DError, match=rf"invalid number of steps: expected an integer in \[1, {LIMITS.max_steps}\]"):
        resolve_options(cfg, 21, num_steps=10 ** 10)
    with pytest.raises(SV3DError, match="invalid max_scale: expected a number in"):
        resolve_options(cfg, 21, max_scale=1e9)
    with pytest.raises(ValueError, match="min_scale <= max_scale"):
        guidance_scales("triangle", 21, 3.0, 1.0)
    with pytest.raises(ValueError, match="0 <= min_scale"):
        guidance_scales("triangle", 21, -1.0, 1.0)


# ---------------------------------------------------------------------------------- 5. manifest confinement


def _tampered(toy: Path, tmp_path: Path, edit) -> Path:
    folder = tmp_path / "tampered"
    shutil.copytree(toy, folder)
    m = json.loads((folder / "manifest.json").read_text())
    edit(m, folder)
    (folder / "manifest.json").write_text(json.dumps(m))
    return folder


def _set_unet_path(m, new):
    e = m["graphs"]["onnx"]["unet"]
    e["model_file"] = new
    e["files"][0]["path"] = new


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink", "model_not_listed"])
def test_escaping_manifest_is_refused(toy, tmp_path, kind):
    other = tmp_path / "other"
    shutil.copytree(toy, other)                          # a complete, valid export outside the folder

    def edit(m, folder):
        if kind == "dotdot":
            _set_unet_path(m, "../other/onnx/unet.onnx")
        elif kind == "absolute":
            _set_unet_path(m, str(other / "onnx" / "unet.onnx"))
        elif kind == "symlink":
            (folder / "onnx" / "unet.onnx").unlink()
            (folder / "onnx" / "unet.onnx").symlink_to(other / "onnx" / "unet.onnx")
        else:
            m["graphs"]["onnx"]["unet"]["model_file"] = "onnx/vae_decoder.onnx"

    folder = _tampered(toy, tmp_path, edit)
    out = tmp_path / "out"
    r = run_cli("runtime", ["--graphs", folder, image(), "-o", out, "--backend", "onnxruntime", "--steps", "1"],
                tmp_path)
    assert r.returncode == 1, r.stderr
    needle = {"dotdot": "leaves the export folder", "absolute": "is absolute",
              "symlink": "resolves outside the export folder", "model_not_listed": "not among its checksummed"}
    one_error(r.stderr, needle[kind])
    assert_nothing_partial(tmp_path, out)


def test_tampered_graph_and_resolution(toy, tmp_path):
    out = tmp_path / "out"
    folder = _tampered(toy, tmp_path, lambda m, f: m["shapes"].update(resolution=128))
    r = run_cli("runtime", ["--graphs", folder, image(), "-o", out, "--backend", "onnxruntime"], tmp_path)
    assert r.returncode == 1, r.stderr
    text = one_error(r.stderr, "does not match the export's shapes", "shape (1, 3, 64, 64), expected "
                     "(1, 3, 128, 128)")
    assert "GraphSpec(" not in text and "TensorSpec(" not in text
    assert_nothing_partial(tmp_path, out)


@pytest.mark.parametrize("kind, needle", [
    ("manifest_list", "malformed manifest: expected a JSON object, got a JSON list"),
    ("graph_is_folder", "unet.onnx is a folder, not a file"),
    ("graphs_is_file", "is a file, not an export folder"),
    ("graphs_empty", "invalid --graphs: expected a folder path, got ''"),
])
def test_graphs_errors_name_their_cause(toy, tmp_path, kind, needle):
    """Not "format_version ... got None", "graph file missing" or "folder not found" for these."""
    folder = _tampered(toy, tmp_path, lambda m, f: None)
    graphs = folder
    if kind == "manifest_list":
        (folder / "manifest.json").write_text("[]")
    elif kind == "graph_is_folder":
        (folder / "onnx" / "unet.onnx").unlink()
        (folder / "onnx" / "unet.onnx").mkdir()
    elif kind == "graphs_is_file":
        graphs = folder / "manifest.json"
    else:
        graphs = ""
    out = tmp_path / "out"
    r = run_cli("runtime", ["--graphs", graphs, image(), "-o", out, "--backend", "onnxruntime", "--steps", "1"],
                tmp_path)
    assert r.returncode == 1, r.stderr
    text = one_error(r.stderr, needle)
    assert "got None" not in text and "missing" not in text and "not found" not in text, text
    assert_nothing_partial(tmp_path, out)


def test_sequential_memory_checks_every_graph_before_sampling(toy, tmp_path):
    """A decoder file that cannot load (same size, so only the hash would tell, and --skip-checksums skips it)
    is refused before the first graph runs, also when graphs load stage by stage (--memory sequential)."""
    folder = _tampered(toy, tmp_path, lambda m, f: None)
    decoder = folder / "onnx" / "vae_decoder.onnx"
    size = decoder.stat().st_size
    decoder.write_bytes((b"not an onnx graph " * (size // 18 + 1))[:size])
    out = tmp_path / "out"
    r = run_cli("runtime", ["--graphs", folder, image(), "-o", out, "--backend", "onnxruntime", "--memory",
                            "sequential", "--skip-checksums", "--steps", "3"], tmp_path)
    assert r.returncode == 1, r.stderr
    one_error(r.stderr, "vae_decoder.onnx is not a readable onnx graph", "breaks at byte 0")
    assert "graphs loaded" not in r.stderr, "it sampled before finding the broken decoder"
    assert_nothing_partial(tmp_path, out)


def test_only_protobuf_model_files_are_walked(toy, tmp_path):
    """MindSpore Lite's .ms model files are flatbuffers: the protobuf check is for ONNX and MindIR files only."""
    from runtime.manifest import Manifest, protobuf_break, sha256_file

    def edit(m, folder):
        (folder / "mslite").mkdir()
        m["graphs"]["mslite"] = {}
        for name, entry in m["graphs"]["onnx"].items():
            ms = folder / "mslite" / f"{name}.ms"
            ms.write_bytes(b"\x18\x00\x00\x00MSL2" + bytes(64))        # a flatbuffer's root offset and id
            m["graphs"]["mslite"][name] = dict(entry, model_file=f"mslite/{name}.ms", files=[
                {"path": f"mslite/{name}.ms", "sha256": sha256_file(ms), "bytes": ms.stat().st_size}])

    folder = _tampered(toy, tmp_path, edit)
    assert protobuf_break(folder / "mslite" / "unet.ms") is not None                  # not a protobuf
    Manifest.load(folder).verify_files("mslite")
    assert protobuf_break(folder / "onnx" / "unet.onnx") is None


# -------------------------------------------------------------------------------- 6. the smaller rough edges


def test_graph_load_failure_leaves_no_output_folder(toy, tmp_path):
    """A failure after the output check (here: a graph file that does not load) removes the folder it made."""
    folder = _tampered(toy, tmp_path, lambda m, f: None)
    bad = folder / "onnx" / "unet.onnx"
    bad.write_bytes(b"not an onnx graph")
    out = tmp_path / "out" / "nested"
    r = run_cli("runtime", ["--graphs", folder, image(), "-o", out, "--backend", "onnxruntime",
                            "--skip-checksums"], tmp_path)
    assert r.returncode == 1, r.stderr
    one_error(r.stderr)
    assert not (tmp_path / "out").exists(), "the output folders it created are left behind"
    assert_nothing_partial(tmp_path, out)


def test_missing_cuda_provider_leaves_no_output_folder(toy, tmp_path):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine has the CUDA provider")
    out = tmp_path / "out"
    r = run_cli("runtime", ["--graphs", toy, image(), "-o", out, "--backend", "onnxruntime", "--device", "cuda"],
                tmp_path)
    assert r.returncode == 1, r.stderr
    one_error(r.stderr, "cuda")
    assert not out.exists()
    assert_nothing_partial(tmp_path, out)


def test_full_output_disk_leaves_nothing(toy, tmp_path, capsys, monkeypatch):
    import runtime.outputs as outputs
    from runtime.cli import main

    def full(path, frames):
        Path(path).mkdir(parents=True, exist_ok=True)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(outputs, "write_frames", full)
    out = tmp_path / "out"
    rc = main(["--graphs", str(toy), image(), "-o", str(out), "--steps", "1", "--quiet", "--backend",
               "onnxruntime"])
    err = capsys.readouterr().err
    assert rc == 1
    one_error(err, "No space left on device")
    assert not out.exists()


def test_unwritable_outputs(toy, oracle, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    r = run_cli("runtime", ["--graphs", toy, image(), "-o", blocker / "sub"], tmp_path)
    assert r.returncode == 1
    one_error(r.stderr, "cannot write to the output folder")
    r = run_cli("export", export_args(oracle, blocker / "sub"), tmp_path)
    assert r.returncode == 2
    one_error(r.stderr, "not a folder")
    assert blocker.read_text() == "x"
    assert_nothing_partial(tmp_path, blocker / "sub")


def test_tiny_checkpoint_with_full_config_gets_the_right_hint(oracle, tmp_path):
    out = tmp_path / "out"
    r = run_cli("export", ["-c", "sv3d_u", "-k", ckpt(oracle), "-o", out], tmp_path)
    assert r.returncode == 2
    text = one_error(r.stderr, "does not match config", "fits the bundled config 'sv3d_u_tiny'")
    assert "other variant" not in text
    r = run_cli("export", ["-c", "sv3d_u_tiny", "-k", ckpt(oracle, "sv3d_p"), "-o", out], tmp_path)
    one_error(r.stderr, "other variant", "sv3d_p_tiny")
    assert_nothing_partial(tmp_path, out)


def test_disk_space_message_uses_human_units(oracle, tmp_path, monkeypatch):
    import shutil as sh

    from export import ExportError, ExportOptions, plan

    usage = sh.disk_usage(tmp_path)
    monkeypatch.setattr(sh, "disk_usage", lambda p: usage._replace(free=1000))
    with pytest.raises(ExportError) as e:
        plan(ExportOptions(config="sv3d_u_tiny", checkpoint=str(ckpt(oracle)), out=str(tmp_path / "out"),
                           resolution=64))
    msg = str(e.value)
    assert "MiB free" in msg and "got 1000 bytes free" in msg and "0.0 GB" not in msg, msg


@pytest.mark.parametrize("kind", ["zip", "raw"])
def test_pickle_checkpoint_is_named_and_refused(tmp_path, kind):
    path = tmp_path / "model.ckpt"
    marker = tmp_path / "pwned"
    if kind == "zip":
        import zipfile

        with zipfile.ZipFile(path, "w") as z:
            z.writestr("archive/data.pkl", pickle.dumps({"state_dict": {}}))
    else:
        class Boom:                                                     # would run code when unpickled
            def __reduce__(self):
                return (Path.touch, (marker,))
        path.write_bytes(pickle.dumps(Boom(), protocol=4))
    out = tmp_path / "out"
    r = run_cli("export", ["-c", "sv3d_u_tiny", "-k", path, "-o", out], tmp_path)
    assert r.returncode == 2, r.stderr
    one_error(r.stderr, "pickle", "convert it to safetensors")
    assert not marker.exists()
    assert_nothing_partial(tmp_path, out)


def test_corrupt_checkpoints(oracle, tmp_path):
    truncated = tmp_path / "truncated.safetensors"
    data = ckpt(oracle).read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    out = tmp_path / "out"
    for path, needle in ((truncated, "truncated"), (garbage, "not a safetensors file")):
        r = run_cli("export", ["-c", "sv3d_u_tiny", "-k", path, "-o", out], tmp_path)
        assert r.returncode == 2, r.stderr
        one_error(r.stderr, needle)
    assert_nothing_partial(tmp_path, out)


@pytest.mark.parametrize("value, count", [(np.nan, "1 NaN"), (np.inf, "1 Inf")])
def test_non_finite_checkpoint_tensor_is_named(oracle, tmp_path, value, count):
    """A bad checkpoint exits 2 (the export's documented status), also when found while loading it."""
    from safetensors.numpy import load_file, save_file

    tensors = load_file(str(ckpt(oracle)))
    name = next(k for k in sorted(tensors) if k.startswith("conditioner.embedders.0.open_clip.model.visual."))
    tensors[name] = tensors[name].copy()
    tensors[name].flat[0] = value
    bad = tmp_path / "nan.safetensors"
    save_file(tensors, str(bad))
    out = tmp_path / "out"
    t0 = time.monotonic()
    r = run_cli("export", ["-c", "sv3d_u_tiny", "-k", bad, "-o", out, "--resolution", RESOLUTION, "--formats",
                           "onnx", "--parity", "off"], tmp_path)
    assert r.returncode == 2, r.stderr[-3000:]
    one_error(r.stderr, f"tensor {name!r} is not finite", count)
    assert time.monotonic() - t0 < 60
    assert_nothing_partial(tmp_path, out)


def test_second_export_to_the_same_folder_exits_2(oracle, tmp_path):
    """Another live export writing the destination (its staging folder, owned by a live process: this one) is a
    bad destination: exit 2, found before any work, and its folder left alone."""
    out = tmp_path / "out"
    other = tmp_path / f".out.partial-{os.getpid()}-abcd1234"
    other.mkdir()
    r = run_cli("export", export_args(oracle, out), tmp_path)
    assert r.returncode == 2, r.stderr[-3000:]
    one_error(r.stderr, f"another export (process {os.getpid()}) is writing")
    assert "[1/4]" not in r.stderr
    assert other.is_dir() and not out.exists()


def test_extra_checkpoint_key_is_named_without_a_wrong_hint(oracle, tmp_path):
    from safetensors.numpy import load_file, save_file

    tensors = load_file(str(ckpt(oracle)))
    tensors["model.diffusion_model.extra.weight"] = np.zeros(3, np.float32)
    extra = tmp_path / "extra.safetensors"
    save_file(tensors, str(extra))
    out = tmp_path / "out"
    r = run_cli("export", ["-c", "sv3d_u_tiny", "-k", extra, "-o", out], tmp_path)
    assert r.returncode == 2, r.stderr
    text = one_error(r.stderr, "1 unexpected tensor(s)", "'model.diffusion_model.extra.weight', which it does not "
                                                         "define")
    assert "pass -c sv3d_u_tiny" not in text, text                  # that is what was passed
    assert_nothing_partial(tmp_path, out)


def test_mindir_files_are_ordinary_files(oracle, tmp_path):
    pytest.importorskip("mindspore")
    from export import mindir
    from runtime.specs import GraphSpec, TensorSpec

    import mindspore as ms
    from mindspore import nn

    class Double(nn.Cell):
        def construct(self, x):
            return x * 2

    spec = GraphSpec("double", (TensorSpec("x", (2, 2)),), (TensorSpec("y", (2, 2)),))
    model, files = mindir.write(Double, spec, spec.example_inputs(), tmp_path / "mindir")
    umask = os.umask(0)
    os.umask(umask)
    assert all((f.stat().st_mode & 0o777) == (0o666 & ~umask) for f in files), [oct(f.stat().st_mode) for f in files]
    assert ms is not None


def test_tiny_image_is_upscaled_with_a_warning(toy, tmp_path):
    from PIL import Image

    tiny = tmp_path / "dot.png"
    Image.fromarray(np.full((1, 1, 4), 200, np.uint8), "RGBA").save(tiny)
    out = tmp_path / "out"
    r = run_cli("runtime", ["--graphs", toy, tiny, "-o", out, "--steps", "1", "--quiet", "--backend",
                            "onnxruntime"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert "warning:" in r.stderr and "upscaled 64x" in r.stderr, r.stderr
    assert (out / "dot" / "info.json").is_file()


def test_corrupt_image(toy, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    out = tmp_path / "out"
    r = run_cli("runtime", ["--graphs", toy, image(), bad, "-o", out], tmp_path)
    assert r.returncode == 1
    one_error(r.stderr, "bad.png")
    assert not out.exists()
    assert_nothing_partial(tmp_path, out)


# ------------------------------------------------------------------------------ 7. the Python API, as the CLI


@pytest.mark.parametrize("threads", ["4", -3, 1000, 2.0, True])
def test_api_threads_are_bounded_as_the_cli(toy, threads):
    from runtime import SV3DPipeline, SV3DError

    with pytest.raises(SV3DError, match=rf"invalid threads: expected an integer in \[0, {usable_cpus()}\]"):
        SV3DPipeline.from_export(toy, backend="onnxruntime", threads=threads)


@pytest.mark.parametrize("backend, kwargs, needle", [
    ("onnxruntime", dict(precision="bf16"), "the onnxruntime backend cannot honour precision='bf16'"),
    ("onnxruntime", dict(cache_dir="c"), "the onnxruntime backend cannot honour cache_dir='c'"),
    ("mindspore", dict(threads=1), "the mindspore backend cannot honour threads=1"),
    ("mindspore", dict(memory_reuse=False), "the mindspore backend cannot honour memory_reuse=False"),
    ("openvino", dict(cpu_mem_arena=True), "the openvino backend cannot honour cpu_mem_arena=True"),
])
def test_api_refuses_what_its_backend_cannot_honour(toy, backend, kwargs, needle):
    from runtime import BackendError, SV3DPipeline
    from runtime.backends import backend_available

    if not backend_available(backend)[0]:
        pytest.skip(f"{backend} is not installed")
    with pytest.raises(BackendError, match=re.escape(needle)):
        SV3DPipeline.from_export(toy, backend=backend, **kwargs)


@pytest.mark.parametrize("kwargs, needle", [
    (dict(precision="bf16"), "cannot honour precision='bf16'"),
    (dict(cache_dir="/tmp/x"), "cannot honour cache_dir='/tmp/x'"),
    (dict(memory_reuse=False), "cannot honour memory_reuse=False"),
    (dict(cpu_mem_arena=False), "cannot honour cpu_mem_arena=False"),
])
def test_mslite_refuses_what_lite_cannot_honour(kwargs, needle):
    """The Lite engine runs the graphs at their exported precision with a thread count: nothing else (checked
    without the engine, which the toy export's formats cannot reach)."""
    from runtime import BackendError, RunOptions
    from runtime.backends import refuse_unhonoured

    refuse_unhonoured("mslite", RunOptions(threads=1, precision="f32"))
    with pytest.raises(BackendError, match=re.escape(needle) + ".*expected what mslite honours: precision "
                                           r"auto \| f32, threads"):
        refuse_unhonoured("mslite", RunOptions(**kwargs))


@pytest.mark.parametrize("folder, needle", [(123, "invalid export folder: expected a folder path"),
                                            ("", "invalid export folder"),
                                            (None, "invalid export folder")])
def test_api_from_export_refuses_what_is_not_a_path(folder, needle):
    from runtime import GraphError, SV3DPipeline

    with pytest.raises(GraphError, match=needle):
        SV3DPipeline.from_export(folder, backend="onnxruntime")


@pytest.fixture(scope="module")
def pipe(toy):
    from runtime import SV3DPipeline

    return SV3DPipeline.from_export(toy, backend="onnxruntime")


@pytest.mark.parametrize("kwargs, needle", [
    (dict(num_steps="2"), "invalid number of steps: expected an integer in [1, 1000], got '2'"),
    (dict(num_steps=2.0), "invalid number of steps: expected an integer in [1, 1000], got 2.0"),
    (dict(min_scale="1"), "invalid min_scale: expected a number, got '1'"),
    (dict(max_scale=b"2"), "invalid max_scale: expected a number, got b'2'"),
    (dict(min_scale=True), "invalid min_scale: expected a number, got True"),
])
def test_api_options_refuse_strings_and_say_so(pipe, kwargs, needle):
    from runtime import SV3DError

    with pytest.raises(SV3DError) as e:
        pipe.generate(image(), **kwargs)
    assert needle in str(e.value), str(e.value)


@pytest.mark.parametrize("elevation, preset", [("10", None), (["10"] * 21, None), ("10", "dynamic"),
                                               (True, None), ([10, None], None)])
def test_api_orbit_refuses_strings(elevation, preset):
    from configs import load_config
    from runtime import OrbitError
    from runtime.orbits import build_orbit, make_orbit

    with pytest.raises(OrbitError, match="elevation must be numbers: expected degrees"):
        build_orbit(load_config("sv3d_p_tiny"), 21, elevation=elevation, preset=preset)
    if preset is None:
        with pytest.raises(OrbitError, match="elevation must be numbers"):
            make_orbit(21, elevation=elevation)


@pytest.mark.parametrize("kind", ["complex", "string", "object"])
def test_api_noise_must_be_real_numbers(pipe, kind):
    import warnings

    from runtime import SV3DError

    good = {"cond_noise": np.zeros(pipe.image_shape, np.float32),
            "latent_noise": np.zeros(pipe.latent_shape, np.float32)}
    bad = {"complex": np.zeros(pipe.latent_shape, np.complex64), "string": "noise",
           "object": np.full(pipe.latent_shape, None)}[kind]
    with warnings.catch_warnings():
        warnings.simplefilter("error")                  # not a ComplexWarning and a run on the real part
        with pytest.raises(SV3DError, match="latent_noise must be real numbers: expected a float32 array"):
            pipe.generate(image(), noise=dict(good, latent_noise=bad))


@pytest.fixture(scope="module")
def one_result(pipe):
    return pipe.generate(image(), num_steps=1)


@pytest.mark.parametrize("where, name, needle", [
    ("out", "../escape", "invalid result name: expected a plain name"),
    ("out", "a/b", "invalid result name"),
    ("out", "", "invalid result name"),
    ("out", ".", "invalid result name"),
    ("", "x", "invalid output folder: expected a folder path, got ''"),
    ("out", "x", "invalid fps: expected an integer in [1, 240], got 0"),            # the CLI's --fps bound
])
def test_api_write_result_refuses_bad_names_and_leaves_no_folder(one_result, tmp_path, monkeypatch, where, name,
                                                                 needle):
    from runtime import OutputError, write_result

    monkeypatch.chdir(_cwd(tmp_path))
    out = tmp_path / "new" / where if where else where
    with pytest.raises(OutputError) as e:
        write_result(one_result, out, name, fps=0 if "fps" in needle else 10)
    assert needle in str(e.value), str(e.value)
    assert not (tmp_path / "new").exists(), "an empty output folder was left"
    assert list(_cwd(tmp_path).iterdir()) == []


def test_api_write_result_failure_removes_the_folders_it_made(one_result, tmp_path, monkeypatch):
    import runtime.outputs as outputs
    from runtime import OutputError, write_result

    def broken(path, frames, fps):
        raise RuntimeError("ffmpeg failed")

    monkeypatch.setattr(outputs, "write_mp4", broken)
    with pytest.raises(OutputError, match="ffmpeg failed"):
        write_result(one_result, tmp_path / "new" / "deeper", "chair")
    assert not (tmp_path / "new").exists()


def test_dotted_image_names_give_plain_result_names(toy, tmp_path):
    """"..png" (stem "."), "...png" (stem "..") and ".hidden.png": no hidden folder, no "..mp4"."""
    names = ["..png", "...png", ".hidden.png"]
    for n in names:
        shutil.copy(image(), tmp_path / n)
    out = tmp_path / "out"
    r = run_cli("runtime", ["--graphs", toy, *[tmp_path / n for n in names], "-o", out, "--steps", "1", "--quiet",
                            "--backend", "onnxruntime"], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["hidden", "image", "image_1"]
    assert (out / "image" / "image.mp4").is_file() and (out / "hidden" / "hidden.mp4").is_file()


@pytest.mark.parametrize("module", ["runtime", "export"])
def test_empty_output_path_is_refused(toy, oracle, tmp_path, module):
    """-o '' is not the working directory."""
    if module == "runtime":
        r = run_cli("runtime", ["--graphs", toy, image(), "-o", "", "--steps", "1"], tmp_path)
        assert r.returncode == 1, r.stderr
        one_error(r.stderr, "invalid -o/--output: expected a folder path, got ''")
    else:
        r = run_cli("export", ["-c", "sv3d_u_tiny", "-k", ckpt(oracle), "-o", ""], tmp_path)
        assert r.returncode == 2, r.stderr
        one_error(r.stderr, "invalid -o/--out: expected a folder path, got ''")
    assert list(_cwd(tmp_path).iterdir()) == []


def test_export_seed_is_checked_up_front(oracle, tmp_path):
    out = tmp_path / "out"
    t0 = time.monotonic()
    r = run_cli("export", export_args(oracle, out, "--seed", "-1"), tmp_path)
    assert r.returncode == 2, r.stderr[-3000:]
    one_error(r.stderr, "invalid --seed: expected an integer >= 0", "got -1")
    assert "[1/4]" not in r.stderr and time.monotonic() - t0 < 30       # before any graph
    assert_nothing_partial(tmp_path, out)
