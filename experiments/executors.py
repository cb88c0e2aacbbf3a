"""Where chunks of a sweep run: in this process, or as tasks on a Ray cluster.

An executor maps ``runner.run_chunk`` over chunks and yields each ``ChunkResult`` as it finishes;
it never touches the sweep directory. The driver (``experiments.sweep``) writes every result
through the store, so one process writes, whatever runs the chunks.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from experiments.provenance import plugin_files
from experiments.runner import ChunkResult, run_chunk
from experiments.spec import SweepSpec

Progress = Callable[[float], None]  # env steps done


class LocalExecutor:
    """Chunks one after another in this process, reporting progress as training proceeds."""

    name = "local"

    def prepare(self) -> None:
        """Nothing to reach before the sweep starts."""

    def map(self, spec: SweepSpec, chunks: list[list[int]], pad_to: int, progress: Progress) -> Iterator[ChunkResult]:
        for chunk in chunks:
            yield run_chunk(spec, chunk, pad_to, progress)


def _run_on_worker(spec: SweepSpec, plugins: dict[str, str], chunk: list[int], pad_to: int) -> ChunkResult:
    """A Ray task: the chunk, on whatever node Ray chose. A plug-in file travels with the task, so
    workers need no shared filesystem (the driver checked its content for the sweep's identity)."""
    import dataclasses

    for path, text in plugins.items():  # one file: the spec names one environment
        # one path per content, so every chunk of the sweep names the same env and reuses its compiled program
        directory = Path(tempfile.gettempdir()) / f"gridsim-plugin-{hashlib.sha256(text.encode()).hexdigest()[:16]}"
        directory.mkdir(exist_ok=True)
        local = directory / Path(path).name
        if not local.exists() or local.read_text(encoding="utf-8") != text:
            tmp = directory / f".{local.name}.{os.getpid()}"
            tmp.write_text(text, encoding="utf-8")
            tmp.replace(local)  # tasks on one node may arrive together
        spec = dataclasses.replace(spec, env=f"{local}:{spec.env.partition(':')[2]}")
    return run_chunk(spec, chunk, pad_to)


# Run apart from the driver: when the driver's end of its stdin closes (the driver ended, even by
# SIGKILL), end every process of the Ray session the driver started. Ray's own processes stop with
# a driver that exits, but two of its agents outlived a killed one.
_REAPER = """
import os, signal, sys, time
from pathlib import Path
session, driver = sys.argv[1], os.getppid()
sys.stdin.buffer.read()
deadline = time.time() + 60
while Path(f"/proc/{driver}").exists() and time.time() < deadline:  # a driver exiting on its own finishes first
    time.sleep(0.1)
def of_session(proc):  # named on its command line, or holding a file of the session open (its logs)
    if session.encode() in (proc / "cmdline").read_bytes():
        return True
    return any(os.readlink(fd).startswith(session) for fd in (proc / "fd").iterdir())
for proc in Path("/proc").iterdir():
    if proc.name.isdigit() and int(proc.name) not in (os.getpid(), driver):
        try:
            if of_session(proc):
                os.kill(int(proc.name), signal.SIGKILL)
        except OSError:
            pass
"""


def _reap_when_gone(session_dir: str) -> None:
    """Start the reaper of this driver's local Ray session (Linux, where /proc lists processes)."""
    if not Path("/proc").is_dir():
        return
    import subprocess
    import sys

    # the pipe's write end stays open in this process alone, until it ends
    reaper = subprocess.Popen([sys.executable, "-c", _REAPER, session_dir], stdin=subprocess.PIPE,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    _REAPERS.append(reaper)


_REAPERS: list = []  # keeps each reaper's pipe open for the life of this process


class RayExecutor:
    """Each chunk a Ray task: on a running cluster (``address``), or on a Ray instance started here.

    A task asks for a GPU where the cluster has GPUs, else for every CPU of a node (an XLA program
    uses all the cores it sees). Ray runs a task again if its worker dies (``max_retries``); the
    driver writes results as tasks finish, so a driver killed and rerun resumes from the store.
    Chunks are as a local run plans them (the driver's memory decides, unless the spec's ``[run]
    points_per_chunk`` does): ``points_per_chunk = 1`` gives every point a task of its own.
    """

    name = "ray"

    def __init__(self, address: str | None = None, max_retries: int = 3):
        import jax

        self.address = address
        self.max_retries = max_retries
        # the driver only writes: the devices are the tasks' (no effect once this process used a device)
        jax.config.update("jax_platforms", "cpu")

    def prepare(self) -> None:
        """Reach the cluster before the sweep writes anything: an address that does not answer is
        named in one line, without Ray's minutes of retries and pages of log."""
        if self.address and self.address != "auto":
            host, _, port = self.address.removeprefix("ray://").rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"--address {self.address}: expected HOST:PORT, ray://HOST:PORT or auto")
            try:
                socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
            except OSError as err:
                raise ValueError(f"cannot reach a Ray cluster at {self.address}: {err.strerror or err}") from None
        self._connect()

    def _connect(self):
        try:
            import ray
        except ImportError:
            raise ValueError("--executor ray needs Ray: pip install 'gridsim[ray]'") from None
        if not ray.is_initialized():
            # workers inherit this environment: XLA flags, the compilation cache, the Python path
            env_vars = {k: v for k, v in os.environ.items()
                        if k.startswith(("XLA_", "JAX_", "PYTHONPATH", "GRIDSIM_"))}
            try:
                context = ray.init(address=self.address, include_dashboard=False, log_to_driver=False,
                                   logging_level=logging.WARNING,
                                   runtime_env={"env_vars": env_vars} if env_vars else None)
            except (ConnectionError, RuntimeError) as err:
                raise ValueError(f"cannot reach a Ray cluster at {self.address}: {err}") from None
            if self.address is None:  # a Ray instance of this process's own: it must not outlive it
                _reap_when_gone(context.address_info["session_dir"])
        return ray

    def resources(self, ray) -> dict:
        """What one chunk asks for."""
        nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
        if any(n.get("GPU", 0) >= 1 for n in nodes):
            # max_calls=0: the worker stays, with its imports and compiled programs (Ray's GPU default is 1)
            return {"num_gpus": 1, "num_cpus": 1, "max_calls": 0}
        cpus = [n["CPU"] for n in nodes if n.get("CPU", 0) > 0]  # a head started with --num-cpus=0 runs nothing
        return {"num_cpus": max(1, int(min(cpus, default=1)))}

    def map(self, spec: SweepSpec, chunks: list[list[int]], pad_to: int, progress: Progress) -> Iterator[ChunkResult]:
        ray = self._connect()
        task = ray.remote(max_retries=self.max_retries, **self.resources(ray))(_run_on_worker)
        plugins = plugin_files(spec)
        pending = {task.remote(spec, plugins, chunk, pad_to): chunk for chunk in chunks}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            chunk = pending.pop(done[0])
            try:
                result = ray.get(done[0])
            except ray.exceptions.RayError as err:  # retries spent, out of memory, or an error in the task
                cause = getattr(err, "cause", None) or err
                first = (str(cause).strip().splitlines() or [""])[0]
                raise ValueError(f"Ray task for sweep points {chunk} failed ({type(cause).__name__}: {first}); "
                                 "finished points are kept, and rerunning the command resumes") from None
            progress(result.env_steps * len(result.points) / pad_to)
            yield result


def executor(name: str, address: str | None = None):
    if name == "local":
        if address:
            raise ValueError("--address is for --executor ray")
        return LocalExecutor()
    if name == "ray":
        return RayExecutor(address)
    raise ValueError(f"unknown executor {name!r}; choose local or ray")
