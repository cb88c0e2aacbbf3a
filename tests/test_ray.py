"""A sweep through Ray, on a Ray instance of its own: a worker killed mid-chunk costs a retry, and
the results equal the local executor's, byte for byte."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO, results, write_spec

from experiments.store import Store

ray = pytest.importorskip("ray")


def _processes(named: bytes) -> set[int]:
    """Pids of the processes whose command line holds ``named``."""
    pids = set()
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and named in (proc / "cmdline").read_bytes():
                pids.add(int(proc.name))
        except OSError:
            continue
    return pids


def _chunk_workers() -> list[int]:
    """Pids of processes running a gridsim chunk as a Ray task (Ray names them after the task)."""
    return sorted(_processes(b"_run_on_worker"))


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the Ray worker through /proc")
def test_a_ray_sweep_survives_a_killed_worker_and_equals_the_local_one(tmp_path, finished):
    spec_path = write_spec(tmp_path)  # the local run's plan by default, so its program: from the cache
    command = [sys.executable, "-m", "experiments.cli", "sweep", str(spec_path), "--executor", "ray"]
    driver = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline, killed = time.time() + 300, None
    while killed is None and driver.poll() is None and time.time() < deadline:
        workers = _chunk_workers()
        if workers:
            killed = workers[0]
            os.kill(killed, signal.SIGKILL)
        time.sleep(0.02)
    assert killed is not None, driver.stderr.read().decode()[-2000:] if driver.poll() is not None else "no worker"
    assert driver.wait(timeout=300) == 0, driver.stderr.read().decode()[-2000:]
    pd.testing.assert_frame_equal(results(tmp_path / "run"), results(finished))
    for name in ("_agents/point-0000.msgpack", "_agents/point-0002.msgpack", "_curves/point-0001.parquet"):
        assert (tmp_path / "run" / name).read_bytes() == (finished / name).read_bytes(), name
    (record,) = Store(tmp_path / "run").chunks()
    assert record["executor"] == "ray" and record["pid"] != killed  # run again, by another worker


def test_an_unreachable_cluster_is_named_before_anything_is_written(tmp_path, capsys):
    from experiments.cli import main

    spec_path = write_spec(tmp_path)
    assert main(["sweep", str(spec_path), "--executor", "ray", "--address", "127.0.0.1:1"]) == 2  # refused at once
    err = capsys.readouterr().err
    assert err == "gridsim: error: cannot reach a Ray cluster at 127.0.0.1:1: Connection refused\n"
    assert not (tmp_path / "run").exists()


def _ray_processes() -> set[int]:
    return _processes(b"ray")


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds Ray's processes through /proc")
def test_a_killed_driver_leaves_no_ray_process_behind(tmp_path, finished):  # finished: not beside another Ray test
    before = _ray_processes()
    command = [sys.executable, "-m", "experiments.cli", "sweep", str(write_spec(tmp_path)), "--executor", "ray"]
    driver = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while not _chunk_workers() and driver.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert driver.poll() is None, driver.stderr.read().decode()[-2000:]
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    deadline = time.time() + 30
    while _ray_processes() - before and time.time() < deadline:
        time.sleep(0.2)
    left = _ray_processes() - before
    assert not left, [(pid, Path(f"/proc/{pid}/cmdline").read_bytes()[:80]) for pid in left]
