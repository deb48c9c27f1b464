"""Set up the native MindSpore Lite engine: the 2.0.0 wheel's library, unpacked, and our C shim, compiled.

PyPI has one MindSpore Lite for x86-64 Linux, 2.0.0, built for CPython 3.7: its Python binding loads nowhere else,
but its native library (the runtime and the ONNX converter) does, from any CPython, through ``shim.cc``. This module
fetches the wheel with pip (a wheel is a zip; pip downloads it for any target Python), keeps ``lib/`` and
``include/`` of it, and builds the shim against them, all in one cache folder::

    <cache root>/mslite-2.0.0/          cache root: $SV3D_CACHE_DIR, else ~/.cache/sv3d-runtime
        engine/lib/*.so                 the wheel's native libraries
        engine/include/api/*.h          its C++ headers
        libsv3d_mslite.so               our shim
        build.json                      what was built from what (the shim's sha256: a changed shim.cc needs a rebuild)

Nothing is downloaded or compiled at run time: `python -m runtime.backends.mslite_native setup` does it, once.
Each step writes into a temporary folder beside its target and renames it into place, so an interrupted setup leaves
nothing half-made.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

from ..base import BackendError, cache_root

VERSION = "2.0.0"
WHEEL = f"mindspore_lite-{VERSION}-cp37-cp37m-manylinux1_x86_64.whl"
PIP_DOWNLOAD = ["download", "--no-deps", "--only-binary=:all:", "--python-version", "37", "--platform",
                "manylinux1_x86_64", f"mindspore-lite=={VERSION}"]
SETUP_COMMAND = "python -m runtime.backends.mslite_native setup"
SHIM_SOURCE = Path(__file__).with_name("shim.cc")
LIBRARY = "libsv3d_mslite.so"
# The wheel's libraries the shim links, in this order: the converter's before libmindspore_core.so. Both carry
# MindIR protobuf classes, and with core first every conversion fails ("param proto name: axis is not in param
# dict"); the wheel's own binding (_c_lite_wrapper) links them in this order too.
LINK_LIBRARIES = ("mindspore-extendrt_python", "mindspore_converter", "mslite_converter_plugin", "mindspore_core")
# -D_GLIBCXX_USE_CXX11_ABI=0: the wheel was built with the pre-C++11 std::string ABI.
# --disable-new-dtags: DT_RPATH, which (unlike DT_RUNPATH) also serves the wheel's libraries' own dependencies
# (libdnnl.so.2, glog, OpenCV), so no LD_LIBRARY_PATH is needed.
CXXFLAGS = ("-std=c++17", "-D_GLIBCXX_USE_CXX11_ABI=0", "-O2", "-fPIC", "-shared")


@dataclass(frozen=True)
class Layout:
    root: Path

    @property
    def engine(self) -> Path:
        return self.root / "engine"

    @property
    def lib(self) -> Path:
        return self.engine / "lib"

    @property
    def library(self) -> Path:
        return self.root / LIBRARY

    @property
    def stamp(self) -> Path:
        return self.root / "build.json"


def layout() -> Layout:
    return Layout(cache_root() / f"mslite-{VERSION}")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def platform_problem() -> Optional[str]:
    """Why the 2.0 wheel's library cannot run here, or None."""
    if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
        return (f"the MindSpore Lite {VERSION} wheel on PyPI is for x86-64 Linux only; this is {sys.platform} "
                f"{platform.machine()}")
    return None


def compiler() -> Optional[str]:
    """The C++ compiler to build with: $CXX, else g++ on PATH; None if there is none."""
    cxx = os.environ.get("CXX") or "g++"
    return shutil.which(cxx)


def problem() -> Optional[str]:
    """What is missing for the native engine to load (with the command that fixes it), or None when it is ready."""
    where = platform_problem()
    if where:
        return where
    lay = layout()
    if not lay.lib.is_dir():
        return f"the MindSpore Lite {VERSION} engine is not set up in {lay.root} (run: {SETUP_COMMAND})"
    if not lay.library.is_file() or not lay.stamp.is_file():
        return f"the MindSpore Lite shim is not built in {lay.root} (run: {SETUP_COMMAND})"
    try:
        built = json.loads(lay.stamp.read_text())
    except (OSError, ValueError) as e:
        return f"{lay.stamp} is unreadable ({e}); run: {SETUP_COMMAND}"
    if built.get("shim_sha256") != _sha256(SHIM_SOURCE):
        return f"the MindSpore Lite shim in {lay.root} was built from another shim.cc (run: {SETUP_COMMAND})"
    return None


def _staging(target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    tmp.chmod(0o755)                 # mkdtemp makes it private; the engine is read by whoever runs the runtime
    return tmp


def _publish(tmp: Path, target: Path) -> None:
    if target.is_dir():
        shutil.rmtree(target)
    elif target.exists():
        target.unlink()
    os.replace(tmp, target)


def fetch_wheel(dest: Path, log=print) -> Path:
    """pip download the wheel into `dest` (pip's own cache makes a second call cheap)."""
    log(f"downloading {WHEEL} with pip (about 170 MB)")
    cmd = [sys.executable, "-m", "pip", *PIP_DOWNLOAD, "-d", str(dest)]
    done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wheel = dest / WHEEL
    if done.returncode != 0 or not wheel.is_file():
        tail = "\n".join(done.stdout.strip().splitlines()[-5:])
        raise BackendError(f"pip could not download mindspore-lite=={VERSION}", got=tail,
                           hint="check the package index, or pass a downloaded wheel with --wheel")
    return wheel


def unpack(wheel: Path, lay: Layout, log=print) -> None:
    """Keep mindspore_lite/lib and mindspore_lite/include of the wheel as lay.engine."""
    prefix = "mindspore_lite/"
    tmp = _staging(lay.engine)
    try:
        with zipfile.ZipFile(wheel) as z:
            members = [m for m in z.namelist() if m.startswith((prefix + "lib/", prefix + "include/"))]
            if not any(m.endswith("libmindspore_core.so") for m in members):
                raise BackendError(f"{wheel} is not the MindSpore Lite wheel expected",
                                   expected=f"mindspore_lite/lib/libmindspore_core.so inside {WHEEL}",
                                   got=f"{len(members)} lib/include files")
            for m in members:
                out = tmp / m[len(prefix):]
                if m.endswith("/"):
                    continue
                out.parent.mkdir(parents=True, exist_ok=True)
                with z.open(m) as src, open(out, "wb") as dst:
                    shutil.copyfileobj(src, dst)
        _publish(tmp, lay.engine)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"unpacked the engine's libraries and headers into {lay.engine}")


def require_compiler() -> str:
    cxx = compiler()
    if cxx is None:
        raise BackendError("no C++ compiler to build the MindSpore Lite shim", expected="g++ (or $CXX) on PATH",
                           got="none", hint="apt-get install g++ (Debian/Ubuntu), then run: " + SETUP_COMMAND)
    return cxx


def compile_shim(lay: Layout, log=print) -> None:
    cxx = require_compiler()
    tmp = _staging(lay.library)
    out = tmp / LIBRARY
    cmd = [cxx, *CXXFLAGS, f"-I{lay.engine}", "-o", str(out), str(SHIM_SOURCE), f"-L{lay.lib}",
           "-Wl,--no-as-needed", *[f"-l{name}" for name in LINK_LIBRARIES],
           f"-Wl,--disable-new-dtags,-rpath,{lay.lib}"]
    try:
        done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if done.returncode != 0:
            raise BackendError("building the MindSpore Lite shim failed", got=done.stdout.strip()[-2000:],
                               hint=" ".join(cmd))
        version = subprocess.run([cxx, "--version"], stdout=subprocess.PIPE, text=True).stdout.splitlines()[0]
        os.replace(out, lay.library)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    lay.stamp.write_text(json.dumps({"mindspore_lite": VERSION, "shim_sha256": _sha256(SHIM_SOURCE),
                                     "compiler": version, "command": cmd}, indent=1))
    log(f"built {lay.library} with {version}")


def _unpacked(lay: Layout) -> bool:
    return (lay.lib / "libmindspore_core.so").is_file() and (lay.engine / "include" / "api" / "model.h").is_file()


def setup(wheel: Optional[Path] = None, force: bool = False, log=print) -> Layout:
    """Fetch (or take `wheel`), unpack and build; then load the result in a fresh process to prove it works.
    An engine already unpacked is kept unless `wheel` or `force` is given (the shim is always rebuilt)."""
    where = platform_problem()
    if where:
        raise BackendError(where, hint="on other platforms install the mindspore_lite wheel that matches them "
                                       "(mindspore.cn/lite); the mslite backend then uses its Python API")
    require_compiler()                # before a 170 MB download
    lay = layout()
    lay.root.mkdir(parents=True, exist_ok=True)
    if wheel is not None:
        unpack(Path(wheel), lay, log)
    elif force or not _unpacked(lay):
        with tempfile.TemporaryDirectory(prefix=".download-", dir=lay.root) as d:
            unpack(fetch_wheel(Path(d), log), lay, log)
    else:
        log(f"the engine is already unpacked in {lay.engine} (--force fetches it again)")
    compile_shim(lay, log)
    check = subprocess.run([sys.executable, "-c", "from runtime.backends.mslite_native import engine; "
                            "print(engine().version)"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, cwd=str(Path(__file__).resolve().parents[3]))
    if check.returncode != 0:
        raise BackendError("the MindSpore Lite shim was built but does not load",
                           got=check.stdout.strip()[-2000:])
    log(f"MindSpore Lite {VERSION} is ready (native engine through {lay.library})")
    return lay


def clean(log=print) -> None:
    lay = layout()
    if lay.root.exists():
        shutil.rmtree(lay.root)
        log(f"removed {lay.root}")


def status_lines() -> List[str]:
    lay = layout()
    why = problem()
    lines = [f"engine folder: {lay.root}", f"shim source: {SHIM_SOURCE}",
             f"compiler: {compiler() or 'none (apt-get install g++)'}"]
    lines.append("status: ready" if why is None else f"status: not ready: {why}")
    return lines
