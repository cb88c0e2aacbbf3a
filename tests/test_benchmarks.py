"""Every script in benchmarks/ runs its smallest configuration (``--smoke``, seconds) in a
subprocess, so that a change to gridsim, agents or experiments that breaks a benchmark fails here
rather than at the next benchmark run. A peer that is installed must have its rows in the output:
a peer row that breaks fails the test instead of being skipped. Nothing is timed against a
threshold, and nothing is written to benchmarks/results/ (``--out-dir`` is the test's tmp_path).

The subprocesses inherit the suite's XLA flags and compilation cache (``conftest.pytest_configure``
puts them in the environment)."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"
RESULTS = BENCHMARKS / "results"
TIMEOUT_S = 600  # a hang, not a slow machine: each smoke run takes seconds to tens of seconds


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def run_benchmark(script: str, out_dir: Path, *args: str) -> tuple[dict, str]:
    """Run ``benchmarks/<script>.py --smoke --out-dir out_dir *args``; its JSON results and stdout.
    On a timeout the whole process group goes (ppo_throughput's workers are its children)."""
    cmd = [sys.executable, str(BENCHMARKS / f"{script}.py"), "--smoke", "--out-dir", str(out_dir), *args]
    started = time.time()
    process = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        pytest.fail(f"{script} --smoke ran past {TIMEOUT_S} s:\n{stderr[-4000:]}")
    assert process.returncode == 0, f"{script} --smoke failed:\n{stdout[-2000:]}\n{stderr[-6000:]}"
    # its results went to out_dir, and nothing of this script's to benchmarks/results/
    written = sorted(out_dir.glob(f"{script}-*.json"))
    assert len(written) == 1, f"expected one {script}-*.json in {out_dir}, found {written}\n{stderr[-2000:]}"
    assert written[0].with_suffix(".md").is_file()
    new = [p for p in RESULTS.glob(f"{script}-*") if p.stat().st_mtime >= started]
    assert not new, f"{script} --smoke wrote into benchmarks/results/: {new}"
    return json.loads(written[0].read_text()), stdout


def positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_env_throughput_smoke(tmp_path):
    results, stdout = run_benchmark("env_throughput", tmp_path)
    rows = results["rollouts"]
    assert rows and all(positive(r["steps_per_s"]) and r["batch"] == 8 for r in rows)
    families = {r["family"] for r in rows}
    assert "gridsim" in families
    for peer in ("navix", "xminigrid", "jaxgmg"):  # only in the bench extra (jaxgmg: from source)
        if installed(peer):
            assert peer in families, f"{peer} is installed but has no row in env_throughput's output"
        else:
            assert peer not in families
    gridsim_rows = [r for r in rows if r["family"] == "gridsim"]
    assert all(set(r["ratios"]) == set(results["peers"]) for r in gridsim_rows)
    assert positive(results["reset_cost"]["8"])  # JSON keys are strings
    assert results["batched"] and all(positive(m["per_s"]) for m in results["batched"].values())
    assert results["device"]["platform"] and results["device"]["xla_flags"] is not None
    assert "| env | B | T |" in stdout


def test_ppo_throughput_smoke(tmp_path):
    results, stdout = run_benchmark("ppo_throughput", tmp_path)
    runs = results["runs"]
    impls = {r["impl"] for r in runs}
    # rejax is in the dev extra, so it is installed wherever the suite runs; its row must be there
    assert impls == ({"gridsim", "rejax", "engine"} if installed("rejax") else {"gridsim", "engine"})
    for r in runs:
        assert r["seeds"] == 1 and r["env_steps_per_call"] == r["timesteps_per_seed"]
        assert positive(r["steps_per_s"]) and positive(r["compile_s"]) and r["seconds"]
    assert results["profile"] == []
    row = next(line for line in stdout.splitlines() if line.startswith("| 1 |")).split("|")
    assert row[5].strip(), "no gridsim ÷ engine ratio in the table"
    if installed("rejax"):
        assert row[8].strip(), "no gridsim ÷ rejax ratio in the table"


def test_ppo_profile_of_one_update_times_every_part(tmp_path):
    """The profile worker in-process: every part of an update of 2 seeds timed, the whole included."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import ppo_throughput
    finally:
        sys.path.remove(str(BENCHMARKS))
    profile = ppo_throughput.profile_update(2, repeats=1)
    assert set(profile["parts"]) >= {"update (whole)", "rollout: env steps", "minibatch gradients", "optimizer"}
    assert all(positive(t["ms_per_update"]) for t in profile["parts"].values())
    assert profile["parts"]["minibatch gradients"]["calls_per_update"] == 4 * 4


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """The sweep benchmark's smoke run, its sweep kept for the discovery benchmark."""
    out = tmp_path_factory.mktemp("sweep_throughput")
    return run_benchmark("sweep_throughput", out, "--runs-dir", str(out / "runs"))


# the two share the sweep above: under `pytest -n --dist loadgroup` they run in one worker
sweep_group = pytest.mark.xdist_group("benchmark-sweep")


@sweep_group
def test_sweep_throughput_smoke(swept):
    results, stdout = swept
    (run,) = results["runs"]
    assert run["executor"] == "local" and run["seeds"] == 2 and run["points"] == 2
    assert positive(run["env_steps"]) and positive(run["env_steps_per_s"]) and run["chunks"]
    assert len(run["misgeneralization_by_point"]) == 2
    # the manifest's spec text says the benchmark's seed count, not the file's, so the sweep reads back whole
    from experiments import spec as sweep_spec
    from experiments.store import Store

    manifest = Store(run["directory"]).manifest()
    assert manifest["seeds"] == 2 and sweep_spec.from_manifest(manifest, run["directory"]).seeds == 2
    assert "| local | 2 | 2 |" in stdout


@sweep_group
def test_discover_throughput_smoke(swept, tmp_path):
    (run,) = swept[0]["runs"]
    results, stdout = run_benchmark("discover_throughput", tmp_path, run["directory"])
    assert results["agents"] == run["points"] * run["seeds"] and results["episodes_per_agent"] == 16
    assert positive(results["first_s"]) and positive(results["agent_episodes_per_s"]) and results["scored_moves"] >= 0
    assert "alpha=0" in stdout  # the shares, per point


@sweep_group
def test_search_throughput_smoke(swept, tmp_path):
    (run,) = swept[0]["runs"]
    results, stdout = run_benchmark("search_throughput", tmp_path, run["directory"])
    assert results["agents"] == run["points"] * run["seeds"] and results["episodes_per_agent"] == 2 * 8 + 8
    assert positive(results["first_s"]) and positive(results["levels_per_s"])
    assert "exposed by search" in stdout  # the summary, per point


def test_curriculum_cost_smoke(tmp_path):
    results, stdout = run_benchmark("curriculum_cost", tmp_path)
    training = results["training"]
    assert [(r["env"], r["curriculum"]) for r in training] == [("cheese-in-corner 7x7", "dr"),
                                                               ("cheese-in-corner 7x7", "accel+regret")]
    for r in training:
        assert r["seeds"] == 1 and r["updates_per_call"] == 1 and r["seconds"]
        assert positive(r["steps_per_s"]) and positive(r["cost_vs_dr"]) and 0 <= r["trained_share"] <= 1
    assert training[0]["cost_vs_dr"] == 1
    assert {r["env"] for r in results["values"]} == {"keys-and-chests 6x6"}
    for r in results["values"]:
        # a batch with no exact value would be values broken, not slow
        assert r["batch"] == 4 and positive(r["levels_per_s"]) and r["exact_share"] > 0 and r["model_states"] > 0
    rollouts = results["rollouts"]
    # jaxued is in the bench extra: where it is installed its rows must be there
    impls = {"gridsim", "jaxued"} if installed("jaxued") else {"gridsim"}
    assert results["peers"] == sorted(impls - {"gridsim"})
    assert {(r["impl"], r["variant"]) for r in rollouts} == {(impl, v) for impl in impls for v in ("dr", "plr+pvl")}
    assert all(positive(r["steps_per_s"]) and positive(r["vs_dr"]) for r in rollouts)
    assert results["device"]["platform"] and results["device"]["xla_flags"] is not None
    assert "| env | curriculum |" in stdout and "the PLR ÷ DR ratio compares" in stdout
