"""What computed a sweep's results, and where: the identity a resume must match, and the manifest.

The identity (spec digest, gridsim's version and source, a plug-in's source) decides whether a
directory's results may be extended; the manifest adds what decides the exact numbers besides the
code (library versions, the machine, the commit) for whoever reads the results later.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import importlib.metadata
import importlib.util
import os
import platform
import subprocess
from pathlib import Path

import jax

import gridsim
from experiments.spec import SweepSpec

# the code that computes a sweep's results: the environments, the agents, and the modules that train,
# evaluate and tabulate them (storage, scheduling, reports and plots only move or read results)
RESULT_CODE = ("gridsim", "agents", "experiments/train.py", "experiments/runner.py", "experiments/plan.py",
               "experiments/spec.py", "experiments/metrics.py")


@functools.cache
def _source_digest() -> str:
    """Hash of the Python source that computes the results, committed or not."""
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for part in RESULT_CODE:
        for path in sorted((root / part).rglob("*.py")) if (root / part).is_dir() else [root / part]:
            digest.update(f"{path.relative_to(root)}\0".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _commit() -> str | None:
    """The git commit of the gridsim checkout, when it runs from one."""
    root = Path(__file__).resolve().parents[1]
    try:
        done = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return (done.stdout.strip() or None) if done.returncode == 0 else None


def plugin_files(spec: SweepSpec) -> dict[str, str]:
    """The plug-in file a spec's environment comes from, if any: path -> its text."""
    module, sep, _ = spec.env.partition(":")
    path = Path(spec.env_reference.partition(":")[0])
    if not sep or not module.endswith(".py") or not path.is_file():
        return {}
    return {module: path.read_text(encoding="utf-8")}  # named as the spec names it, wherever it lies


def _plugin_sources(spec: SweepSpec) -> dict[str, str]:
    """The plug-in source a spec's environment comes from, name -> text: a file (``file.py:Attr``) with
    the user's modules that importing it loaded, or an importable module outside gridsim
    (``package.module:attr``). Built-in names have none."""
    module, sep, _ = spec.env.partition(":")
    if sep and module.endswith(".py"):
        try:
            found = gridsim.registry.plugin_sources(spec.env_reference)
        except ValueError:
            return {}  # gridsim.make names a file that cannot be loaded
        main = str(Path(spec.env_reference.partition(":")[0]).resolve())
        folder = Path(main).parent
        return {module if path == main else f"helper {_relative(Path(path), folder)}": text
                for path, text in found.items()}
    if not sep or module.split(".")[0] in ("gridsim", "agents", "experiments"):
        return {}
    try:
        origin = importlib.util.find_spec(module).origin
        return {origin: Path(origin).read_text(encoding="utf-8")}
    except (ImportError, AttributeError, TypeError, ValueError, OSError):
        return {}  # gridsim.make reports a module that cannot be found


def _relative(path: Path, folder: Path) -> str:
    return str(path.relative_to(folder)) if path.is_relative_to(folder) else str(path)


def code_identity() -> dict[str, str]:
    """The gridsim that runs here: checked on every chunk, so a cluster node with another install
    cannot add its results to a table."""
    return {"gridsim version": gridsim.__version__, "gridsim source": _source_digest()}


def identity(spec: SweepSpec) -> dict[str, str]:
    """What a sweep's results depend on: the spec, gridsim's version and source, the plug-in's source.
    Resuming with any of them changed would mix two programs' agents in one table."""
    plugins = {f"plug-in {path}": hashlib.sha256(text.encode()).hexdigest()[:16]
               for path, text in _plugin_sources(spec).items()}
    return {"spec": spec.digest, **code_identity(), **plugins}


def _versions() -> dict:
    out = {}
    for name in ("gridsim", "jax", "jaxlib", "flax", "optax", "numpy"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def machine() -> dict:
    """What decides a run's exact numbers besides the code: floating-point results differ across CPU
    instruction sets and XLA flags, so the same sweep on two machines agrees only statistically."""
    info = {"platform": platform.platform(), "python": platform.python_version(),
            "xla_flags": os.environ.get("XLA_FLAGS", ""), "backend": jax.default_backend(),
            "devices": [str(d) for d in jax.devices()],
            "device_kinds": sorted({d.device_kind for d in jax.devices()})}
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        cpuinfo = ""
    fields = dict(line.split(":", 1) for line in cpuinfo.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    info["cpu"] = fields.get("model name") or platform.processor()
    flags = set(fields.get("flags", "").split())
    info["cpu_features"] = sorted(flags & {"sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw",
                                           "avx512vl", "avx512_vnni", "avx512_bf16", "amx_bf16"})
    info["cpu_count"] = os.cpu_count()
    return info


def manifest(spec: SweepSpec) -> dict:
    """The sweep's manifest: what it is and what computes it (the store writes it once)."""
    return {
        "digest": spec.digest,
        "identity": identity(spec),
        "commit": _commit(),
        "env": spec.env,
        "spec": spec.source,
        "folder": None if spec.folder is None else str(spec.folder),  # where a plug-in file's path starts
        "points": spec.points,
        "seeds": spec.seeds,
        "created": datetime.datetime.now().isoformat(timespec="seconds"),
        "versions": _versions(),
        "machine": machine(),
    }
