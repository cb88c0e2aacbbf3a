"""Sweeps end to end: spec validation, results, resume after SIGKILL, refusal, two devices, plug-ins."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pandas as pd
import pytest
from conftest import REPO, results, with_xla_flag, write_spec

from experiments import provenance, runner, sweep
from experiments import spec as sweep_spec
from experiments.cli import main
from experiments.inspection import agent_episodes, load_agent, visitation
from experiments.plots import plot
from experiments.report import load, outcome_columns, summarize
from experiments.store import Store


@pytest.mark.parametrize(
    "replace, message",
    [
        ({'seeds = 4': 'seeds = "many"'}, "'seeds' must be an integer"),
        ({'seeds = 4': 'seeds = 0'}, "'seeds' must lie in \\[1, 1,048,576\\], got 0"),
        ({'name = "tiny"': 'name = "tiny"\ncolour = 3'}, r"unknown key\(s\) \['colour'\]"),
        ({"update_epochs = 2": "update_epoch = 2"}, "unknown key 'ppo.update_epoch'"),
        ({"update_epochs = 2": 'update_epochs = "two"'}, "'ppo.update_epochs' must be of type int"),
        ({"num_minibatches = 2": "num_minibatches = 3"}, "num_minibatches"),
        ({"alpha = [0.0, 0.5, 1.0]": "alpha = 0.5"}, "'sweep.alpha' must be a non-empty list"),
        ({"alpha = [0.0, 0.5, 1.0]": "alpha = [0.0, 1.5]"}, "alpha must lie in"),
        ({"alpha = [0.0, 0.5, 1.0]": "height = [5, 7]"}, "'sweep.height' is not a traced param"),
        ({"episodes = 32": "episodes = -1"}, "'eval.episodes' must be >= 1"),
        ({'env = "coin-at-end"': 'env = "no-such-env"'}, "unknown environment 'no-such-env'"),
        ({"height = 5": "height = 2"}, "grid too small"),
        ({"[ppo]": "[ppo"}, "not valid TOML"),
        ({"[eval]": "[run]\npoints_per_chunk = 0\n[eval]"}, "'run.points_per_chunk' must be >= 1"),
        ({"[eval]": "[run]\nchunk = 2\n[eval]"}, r"unknown key\(s\) \['run.chunk'\]"),
        ({"height = 5": "height = 5\nlevel_seed = 3"}, "'env_options.level_seed'.*set num_levels"),
        ({"height = 5": "height = 5\nnum_levels = -2"}, "num_levels must be a whole number >= 0"),
    ],
)
def test_malformed_sweep_files_are_rejected_naming_the_key(tmp_path, capsys, replace, message):
    path = write_spec(tmp_path, **replace)
    with pytest.raises(sweep_spec.SpecError, match=message):
        sweep_spec.load(path)
    assert main(["sweep", str(path)]) == 2
    assert "gridsim: error:" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # nothing was written


def test_tiny_sweep_gives_one_row_per_point_and_seed(finished):
    table = results(finished)
    assert len(table) == 3 * 4
    assert list(table.alpha.unique()) == [0.0, 0.5, 1.0]
    for column in ("train_success", "misgeneralization_rate", "capability_failure_rate", "test_proxy:end",
                   "test_true", "test_fail", "test_episodes", "distinguishing_episodes", "num_levels", "diverged",
                   "capable"):
        assert column in table.columns
    counted = table[["test_fail", "test_true", "test_proxy:end"]].sum(axis=1)
    assert (counted == table.distinguishing_episodes).all() and (table.test_episodes == 32).all()
    assert (table.distinguishing_episodes < 32).all() and (table.num_levels == 0).all()
    distinguishing = table.distinguishing_episodes.to_numpy()
    expected = np.where(distinguishing > 0, table["test_proxy:end"] / np.maximum(distinguishing, 1), np.nan)
    np.testing.assert_allclose(table.misgeneralization_rate, expected)  # NaN exactly where nothing was counted
    table_, swept, manifest = load(finished)
    assert swept == ["alpha"] and manifest["seeds"] == 4
    summary = summarize(table_, swept)
    assert len(summary) == 3 and (summary.seeds == 4).all()
    # the outcome figure stacks the outcome counts of distinguishing test episodes, and nothing else
    assert outcome_columns(table_) == ["test_fail", "test_true", "test_proxy:end"] and "test_regret" in table_
    assert (table_[outcome_columns(table_)].sum(axis=1) == table_.distinguishing_episodes).all()
    written = {p.name for p in plot(finished)}
    assert {"misgeneralization.png", "outcomes.png", "training.png", "seeds.png", "visitation.png",
            "misgeneralization.svg"} <= written
    chunks = Store(finished).chunks()
    assert [c["points"] for c in chunks] == [[0, 1, 2]]  # small enough for one compiled call
    assert chunks[0]["executor"] == "local" and chunks[0]["env_steps_per_s"] > 0


def test_each_agent_trains_on_its_own_fixed_level_set(finished):
    """With num_levels = 3, an agent's 16 parallel environments start on at most 3 distinct levels; each
    agent (seed) has its own level_seed, the same at every sweep point, and its own levels."""
    spec = sweep_spec.load(write_spec(finished.parent, name="levels.toml", out=finished))
    seed_runner, params = runner.runner_for(spec)  # the compiled programs of the tiny sweep
    points = runner.batch_params(params, [{"alpha": 0.5, "num_levels": 3}, {"alpha": 0.0, "num_levels": 3}])
    state = seed_runner._init(runner.seed_keys(spec), points)
    seeds = np.asarray(state.env_params.level_seed)
    assert len(set(seeds[0])) == spec.seeds and (seeds[0] == seeds[1]).all()
    walls = np.asarray(state.env_state.level.obj_pos)  # [points, seeds, envs, slots, 2]
    agents = np.asarray(state.env_state.level.agent)
    level_sets = [{(tuple(a), tuple(w.ravel())) for a, w in zip(agents[0, s], walls[0, s])} for s in range(4)]
    assert all(1 <= len(levels) <= 3 for levels in level_sets)
    assert len({frozenset(levels) for levels in level_sets}) > 1


def test_inspect_traces_episodes_that_move_one_cell_at_a_time(finished, tmp_path, capsys):
    agent = load_agent(finished, point=0, seed=1)
    played = agent_episodes(agent, episodes=32)
    agent_pos = np.asarray(played.levels.agent)  # [T + 1, episodes, 2]
    walls = np.asarray(played.levels.walls)
    for e in range(32):
        steps = np.flatnonzero(played.active[:, e])
        assert steps[0] == 0 and (np.diff(steps) == 1).all()  # the first episode is one unbroken run
        path = agent_pos[steps, e]
        assert (np.abs(np.diff(path, axis=0)).sum(axis=1) <= 1).all()
        assert not walls[steps, e, path[:, 0], path[:, 1]].any()
        outcome = agent.env.outcome_names[played.outcome[e]]
        if outcome == "proxy:end":
            assert path[-1, 1] == agent.env.width - 2  # it ended on the end column
        if outcome == "true":
            np.testing.assert_array_equal(path[-1], played.levels.obj_pos[steps[0], e, 0])  # on the coin
    heat = visitation(agent.env, played)
    assert heat.shape == (agent.env.height, agent.env.width) and np.isclose(heat.sum(), 1.0)

    assert main(["inspect", str(finished), "--point", "2", "--seed", "3", "--episodes", "16",
                 "--out", str(tmp_path)]) == 0
    assert {"agent-p0002-s0003-visits.png", "agent-p0002-s0003.gif"} <= {p.name for p in tmp_path.iterdir()}
    assert main(["inspect", str(finished), "--point", "3"]) == 2
    assert "point 3 is not in this sweep (its points are 0 to 2)" in capsys.readouterr().err


def _sweep_command(spec_path, extra_env=None):
    env = dict(os.environ, **(extra_env or {}))
    return [sys.executable, "-m", "experiments.cli", "sweep", str(spec_path)], env


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="simulates two CPU devices; the default backend is not CPU")
def test_a_sweep_killed_on_two_devices_resumes_on_one_to_the_uninterrupted_result(tmp_path, finished):
    """Killed after its first chunk of one point, its seeds sharded over two (simulated) devices; the
    rerun, in this process on one device, does the rest a point per chunk. The table equals the
    uninterrupted one-device run's (a split changes the weights' last bits, too little to move this
    tiny sweep's counts), and each chunk's record names the devices that computed it."""
    spec_path = write_spec(tmp_path, **{"[eval]": "[run]\npoints_per_chunk = 1\n\n[eval]"})
    flags = with_xla_flag(os.environ.get("XLA_FLAGS", ""), "--xla_force_host_platform_device_count=2")
    command, env = _sweep_command(spec_path, {"XLA_FLAGS": flags})
    process = subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    first = tmp_path / "run" / "point-0000.parquet"
    deadline = time.time() + 240
    while not first.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert first.exists(), process.stderr.read().decode()[-2000:] if process.poll() is not None else "timed out"
    process.send_signal(signal.SIGKILL)
    process.wait()
    done_before = {p.name for p in (tmp_path / "run").glob("point-*.parquet")}
    assert len(done_before) < 3, "the sweep finished before it could be killed"
    resumed = sweep_spec.load(spec_path)
    assert resumed.digest == sweep_spec.load(write_spec(tmp_path, name="plain.toml")).digest
    with pytest.warns(UserWarning, match="taking over .lock from a sweep that ended without releasing it"):
        sweep.run(resumed, progress=False)  # the killed process's lock is stale, and said to be
    pd.testing.assert_frame_equal(results(tmp_path / "run"), results(finished))
    devices = [len(record["devices"]) for record in Store(tmp_path / "run").chunks()]
    assert devices[0] == 2 and set(devices[1:]) == {1}, devices


def _files(directory: Path) -> dict[str, bytes]:
    """A sweep's results, file by file: tables, curves and weights (not its records of when and where)."""
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*"))
            if p.is_file() and p.parts[-2] in (directory.name, "_agents", "_curves") and p.name.startswith("point-")}


def test_a_points_numbers_do_not_depend_on_its_chunk_or_on_a_resume(finished, tmp_path):
    """The finished sweep ran its three points as one chunk of three. Point 0 lost (its files gone)
    and resumed runs alone in a chunk padded to three, though the resumed file asks for chunks of
    one: its table, curves and weights are the same bytes."""
    import shutil

    run = shutil.copytree(finished, tmp_path / "run")
    assert Store(run).manifest()["points_per_chunk"] == 3
    reference = _files(run)
    assert len(reference) == 9
    for name in ("point-0000.parquet", "_agents/point-0000.msgpack", "_curves/point-0000.parquet"):
        (run / name).unlink()
    one_per_chunk = write_spec(tmp_path, out=run, **{"[eval]": "[run]\npoints_per_chunk = 1\n\n[eval]"})
    sweep.run(sweep_spec.load(one_per_chunk), progress=False)
    assert _files(run) == reference
    assert [r["points"] for r in Store(run).chunks()] == [[0, 1, 2], [0]]


def test_ctrl_c_twice_during_compilation_ends_with_one_line_and_keeps_the_directory_usable(tmp_path):
    """Both interrupts land while XLA compiles (no compilation cache): exit 130, the one line that
    says what is kept, no traceback and no crash; the directory then resumes."""
    spec_path = write_spec(tmp_path)
    command = [sys.executable, "-m", "experiments.cli", "--no-compile-cache", "sweep", str(spec_path)]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    seen = b""
    while b"chunk 1/1" not in seen and process.poll() is None:
        seen += os.read(process.stderr.fileno(), 4096)
    for _ in range(2):
        process.send_signal(signal.SIGINT)
        time.sleep(0.3)
    err = (seen + process.stderr.read()).decode()
    assert process.wait(timeout=120) == 130, err[-2000:]
    assert "Traceback" not in err and err.count("gridsim: interrupted:") == 1, err[-2000:]
    assert Store(tmp_path / "run").manifest()["seeds"] == 4


def test_a_different_sweep_into_the_same_directory_is_refused(tmp_path, finished, capsys):
    other = write_spec(tmp_path, out=finished, **{"alpha = [0.0, 0.5, 1.0]": "alpha = [0.25]"})
    before = results(finished)
    assert main(["sweep", str(other)]) == 2
    assert "holds results of a different sweep" in capsys.readouterr().err
    pd.testing.assert_frame_equal(results(finished), before)  # nothing lost


PLUGIN_FILE = """
import gridsim


class RenamedCoin(gridsim.CoinAtEnd):
    \"\"\"coin-at-end under another name, from a user's own file.\"\"\"

    name = "renamed-coin"
"""


def test_a_sweep_files_plugin_path_is_relative_to_the_sweep_files_folder(tmp_path, monkeypatch):
    """``env = "user_env.py:RenamedCoin"`` names the file beside the sweep file, from any working
    directory; the digest does not depend on where the folder lies."""
    folder = tmp_path / "study"
    folder.mkdir()
    (folder / "user_env.py").write_text(PLUGIN_FILE)
    path = write_spec(folder, env="user_env.py:RenamedCoin")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    spec = sweep_spec.load(path)
    assert spec.env_reference == f"{folder.resolve() / 'user_env.py'}:RenamedCoin"
    assert provenance.plugin_files(spec) == {"user_env.py": PLUGIN_FILE}
    moved = tmp_path / "moved"
    folder.rename(moved)
    assert sweep_spec.load(moved / path.name).digest == spec.digest
    (moved / "user_env.py").unlink()
    with pytest.raises(sweep_spec.SpecError, match="relative to the sweep file's folder"):
        sweep_spec.load(moved / path.name)


def test_a_plugin_environment_from_a_sweep_file_runs_end_to_end(tmp_path, finished, monkeypatch, capsys):
    """A user's file, named in the sweep file, runs through the whole pipeline. (It computes what
    coin-at-end does, so its programs come from the compilation cache, and its table equals the
    built-in's.) Editing the file, or gridsim's own source, makes the results another program's:
    a rerun is refused, naming what changed, until --force starts over."""
    plugin = tmp_path / "user_env.py"
    plugin.write_text(PLUGIN_FILE)
    path = write_spec(tmp_path, env=f"{plugin}:RenamedCoin")
    table = results(sweep.run(sweep_spec.load(path), progress=False))
    assert len(table) == 12 and "test_proxy:end" in table.columns
    assert Store(tmp_path / "run").manifest()["identity"][f"plug-in {plugin}"]
    pd.testing.assert_frame_equal(table, results(finished))

    plugin.write_text(PLUGIN_FILE + "\n# edited\n")
    assert main(["sweep", str(path)]) == 2
    assert f"changed: plug-in {plugin}" in capsys.readouterr().err
    plugin.write_text(PLUGIN_FILE)
    monkeypatch.setattr(provenance, "_source_digest", lambda: "0123456789abcdef")
    assert main(["sweep", str(path)]) == 2
    assert "this sweep, run by other code (changed: gridsim source)" in capsys.readouterr().err
    pd.testing.assert_frame_equal(results(tmp_path / "run"), table)  # nothing lost
    sweep.run(sweep_spec.load(path), force=True, progress=False)
    assert Store(tmp_path / "run").manifest()["identity"]["gridsim source"] == "0123456789abcdef"
