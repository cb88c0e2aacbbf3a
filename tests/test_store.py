"""The sweep directory's guarantees: one writer, whole files, bad files recomputed, nothing else read;
and bad input everywhere ends in one line naming the problem (exit 2), never a traceback."""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
from pathlib import Path

import pandas as pd
import pytest
from conftest import TINY, results, write_spec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from experiments import provenance, sweep
from experiments import spec as sweep_spec
from experiments import store as store_module
from experiments.cli import main
from experiments.store import Store, StoreError


@pytest.fixture
def copy_of_finished(finished, tmp_path):
    """A finished tiny sweep in a fresh directory, and its spec file (same results, same identity)."""
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    return write_spec(tmp_path, out=run), run


def test_a_second_writer_is_refused_at_once_naming_the_holder(copy_of_finished, capsys):
    spec_path, run = copy_of_finished
    before = results(run)
    holder = Store(run)
    holder._lock()  # another process, as far as the lock can tell: its own open file
    try:
        assert main(["sweep", str(spec_path), "--force"]) == 2
        err = capsys.readouterr().err
        assert f"being written by another gridsim sweep (pid {os.getpid()} on {socket.gethostname()}" in err
    finally:
        holder._unlock()
    pd.testing.assert_frame_equal(results(run), before)  # --force deleted nothing under the lock


def test_a_lock_left_by_a_dead_process_is_taken_over(copy_of_finished):
    spec_path, run = copy_of_finished
    (run / store_module.LOCK).write_text(f"pid 4194303 on {socket.gethostname()}, since then\n")  # no such pid
    with pytest.warns(UserWarning, match="ended without releasing it"):
        sweep.run(sweep_spec.load(spec_path), progress=False)  # nothing left to do, but it got the lock


def test_a_damaged_point_file_is_computed_again_and_strays_are_ignored(copy_of_finished, finished):
    spec_path, run = copy_of_finished
    (run / "point-0001.parquet").write_bytes(b"")  # a write cut short
    shutil.copy(run / "point-0002.parquet", run / "point-0000 (copy).parquet")
    (run / "notes.parquet").write_bytes(b"not a table")
    shutil.copy(run / "_curves" / "point-0000.parquet", run / "_curves" / "point-0000 (copy).parquet")
    leftovers = [run / ".tmp-abc", run / store_module.AGENTS / ".tmp-def"]  # writes a killed process left
    for path in leftovers:
        path.write_bytes(b"partial")
    with pytest.warns(UserWarning, match="point-0001.parquet is unreadable"):
        sweep.run(sweep_spec.load(spec_path), progress=False)
    assert [c["points"] for c in Store(run).chunks()][-1] == [1]  # only the damaged point was run again
    table, _ = Store(run).results()
    pd.testing.assert_frame_equal(table, results(finished))
    assert (run / "notes.parquet").exists()  # the user's files are left alone
    assert not any(path.exists() for path in leftovers)
    curves = Store(run).curves()
    assert len(curves) == len(Store(finished).curves())  # the copied curves file is not read


def test_a_point_file_of_the_wrong_shape_is_computed_again(copy_of_finished):
    spec_path, run = copy_of_finished
    table = pd.read_parquet(run / "point-0002.parquet")
    table.head(2).to_parquet(run / "point-0002.parquet")  # two seeds of four
    with pytest.warns(UserWarning, match=r"point-0002.parquet is incomplete \(2 rows, not one per seed \(4\)\)"):
        sweep.run(sweep_spec.load(spec_path), progress=False)
    assert len(pd.read_parquet(run / "point-0002.parquet")) == 4


def test_results_files_follow_the_umask(finished):
    umask = os.umask(0)
    os.umask(umask)
    for path in (finished / "point-0000.parquet", finished / store_module.MANIFEST):
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_figures_never_go_where_the_table_is_read(finished, tmp_path, capsys):
    assert main(["plot", str(finished), "--out", str(finished)]) == 2
    assert "is the sweep directory, where results are read" in capsys.readouterr().err
    assert main(["inspect", str(finished), "--out", str(finished)]) == 2
    assert not list(finished.glob("*.png")) and not list(finished.glob("*.gif"))
    fresh = tmp_path / "fresh"
    assert main(["sweep", str(write_spec(tmp_path)), "--out", str(fresh), "--figures", str(fresh)]) == 2
    assert not (fresh / store_module.MANIFEST).exists()  # refused before anything ran


def test_a_clean_exit_leaves_no_holder_so_the_next_run_does_not_warn(copy_of_finished, recwarn):
    spec_path, run = copy_of_finished
    for _ in range(2):
        sweep.run(sweep_spec.load(spec_path), progress=False)
        assert (run / store_module.LOCK).read_text() == ""
    assert not [w for w in recwarn if "taking over" in str(w.message)]


def test_a_stale_lock_is_taken_over_with_a_one_line_warning(copy_of_finished, recwarn):
    import warnings

    spec_path, run = copy_of_finished
    (run / store_module.LOCK).write_text(f"pid 999999999 on {socket.gethostname()}, since 2026-01-01T00:00:00\n")
    assert main(["sweep", str(spec_path), "--figures", str(run.parent / "figures")]) == 0
    [taken] = [w for w in recwarn if "taking over" in str(w.message)]
    assert warnings.formatwarning(taken.message, taken.category, taken.filename, taken.lineno) == (
        "gridsim: warning: taking over .lock from a sweep that ended without releasing it "
        f"(pid 999999999 on {socket.gethostname()}, since 2026-01-01T00:00:00)\n")  # as the CLI prints it


def test_a_chunk_from_another_gridsim_is_refused(tmp_path):
    """A cluster node with another install: its results never reach the table."""
    from experiments.runner import ChunkResult

    class OtherInstall:
        name = "other"

        def map(self, spec, chunks, pad_to, progress):
            code = {"gridsim version": "0.0.1", "gridsim source": "0000000000000000"}
            yield ChunkResult(chunks[0], {}, {}, {}, 1.0, 1, "node-7", 1, [], code)

    spec = sweep_spec.load(write_spec(tmp_path))
    with pytest.raises(ValueError, match=r"on node-7 by another gridsim \(gridsim version, gridsim source"):
        sweep.run(spec, progress=False, executor=OtherInstall())
    assert not Store(spec.out).point_files()


def test_the_order_of_swept_keys_is_part_of_the_identity(tmp_path):
    """Point N's settings follow the order of the [sweep] keys, so a resume with them swapped is refused."""
    swept = "alpha = [0.0, 0.5, 1.0]"
    one = sweep_spec.load(write_spec(tmp_path, "one.toml", **{swept: "alpha = [0.0, 1.0]\nnum_levels = [0, 8]"}))
    two = sweep_spec.load(write_spec(tmp_path, "two.toml", **{swept: "num_levels = [0, 8]\nalpha = [0.0, 1.0]"}))
    assert one.points[1] != two.points[1] and one.digest != two.digest


def test_a_directory_without_results_takes_a_corrected_spec(tmp_path):
    """A spec that failed after its manifest was written leaves nothing to protect."""
    run = tmp_path / "run"
    bad = sweep_spec.load(write_spec(tmp_path, name="bad.toml", out=run, **{"seeds = 4": "seeds = 3"}))
    with Store(run).writing(provenance.manifest(bad)):
        pass  # crashed before any point
    good = sweep_spec.load(write_spec(tmp_path, out=run))
    with Store(run).writing(provenance.manifest(good)) as done:
        assert done == set()
    assert Store(run).manifest()["seeds"] == 4


def tree_digest(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its bytes: what a command may not change."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_directory_that_is_not_a_sweeps_is_refused_and_force_keeps_the_users_files(tmp_path, capsys):
    """A sweep starts only in an empty directory or its own; even --force removes only what a sweep
    writes (the user's picture in _figures, their notes beside the results, stay)."""
    run = tmp_path / "mine"
    (run / "_figures").mkdir(parents=True)
    (run / "_figures" / "mine.png").write_bytes(b"x")
    (run / "notes.txt").write_text("keep me")
    before = tree_digest(run)
    spec_path = write_spec(tmp_path, out=run)
    assert main(["sweep", str(spec_path)]) == 2
    assert "is not a sweep directory" in capsys.readouterr().err
    assert tree_digest(run) == before
    with Store(run).writing(provenance.manifest(sweep_spec.load(spec_path)), force=True) as done:
        assert done == set()
    assert {k: v for k, v in tree_digest(run).items() if k in before} == before


def test_results_whose_manifest_is_gone_are_refused(copy_of_finished, tmp_path, capsys):
    spec_path, run = copy_of_finished
    (run / store_module.MANIFEST).unlink()
    before = tree_digest(run)
    other = write_spec(tmp_path, "other.toml", out=run, **{"alpha = [0.0, 0.5, 1.0]": "alpha = [0.25]"})
    for spec in (spec_path, other):
        assert main(["sweep", str(spec)]) == 2
        assert "sweep results but no manifest" in capsys.readouterr().err
    assert tree_digest(run) == before


def test_force_over_another_sweep_removes_its_results_and_nothing_else(copy_of_finished, tmp_path):
    spec_path, run = copy_of_finished
    for folder in ("_figures", "_agents", "_curves", "_chunks"):
        (run / folder).mkdir(exist_ok=True)
        (run / folder / "mine.txt").write_text(folder)
    (run / "mine.parquet").write_bytes(b"not a point file")
    swept = {"alpha = [0.0, 0.5, 1.0]": "alpha = [0.25]"}
    other = sweep_spec.load(write_spec(tmp_path, "other.toml", out=run, **swept))
    with Store(run).writing(provenance.manifest(other), force=True) as done:
        assert done == set()
    left = set(tree_digest(run))
    assert {"_figures/mine.txt", "_agents/mine.txt", "_curves/mine.txt", "_chunks/mine.txt", "mine.parquet"} <= left
    assert not [name for name in left if "point-" in name or name.endswith((".png", ".msgpack")) or "chunk-" in name]


def test_a_plugins_own_imports_are_part_of_the_sweeps_identity(tmp_path, monkeypatch):
    """A helper module beside the plug-in, edited between a kill and a resume, makes the results
    another program's: the identity names it."""
    folder = tmp_path / "study"
    folder.mkdir()
    (folder / "gridsim_test_helper.py").write_text("NAME = 'helped-coin'\n")
    (folder / "helped.py").write_text("import gridsim\nimport gridsim_test_helper\n\n\n"
                                      "class HelpedCoin(gridsim.CoinAtEnd):\n    name = gridsim_test_helper.NAME\n")
    monkeypatch.syspath_prepend(str(folder))
    spec = sweep_spec.load(write_spec(folder, env="helped.py:HelpedCoin"))
    before = provenance.identity(spec)
    assert "plug-in helped.py" in before and "plug-in helper gridsim_test_helper.py" in before
    (folder / "gridsim_test_helper.py").write_text("NAME = 'helped-coin'  # edited\n")
    after = provenance.identity(spec)
    assert [k for k in after if after[k] != before[k]] == ["plug-in helper gridsim_test_helper.py"]


def test_a_corrupt_manifest_is_named_and_force_gets_past_it(copy_of_finished, capsys):
    spec_path, run = copy_of_finished
    (run / store_module.MANIFEST).write_text("{ not json")
    assert main(["report", str(run)]) == 2
    assert f"{run / store_module.MANIFEST} is unreadable" in capsys.readouterr().err
    assert main(["sweep", str(spec_path)]) == 2
    with Store(run).writing(provenance.manifest(sweep_spec.load(spec_path)), force=True) as done:
        assert done == set()  # started over


def test_ctrl_c_says_what_is_kept_and_how_to_resume(copy_of_finished, monkeypatch, capsys):
    spec_path, run = copy_of_finished
    (run / "point-0002.parquet").unlink()

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
        yield

    monkeypatch.setattr(sweep.LocalExecutor, "map", interrupted)
    assert main(["sweep", str(spec_path)]) == 130
    err = capsys.readouterr().err
    assert f"interrupted: 2 of 3 sweep points are done and kept in {run}; run the same command again" in err
    assert "Traceback" not in err


def test_a_full_disk_is_one_line_and_keeps_what_was_written(copy_of_finished, finished, monkeypatch, capsys):
    spec_path, run = copy_of_finished
    (run / "point-0001.parquet").unlink()

    def full(path, write):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(store_module, "atomic_write", full)
    assert main(["sweep", str(spec_path)]) == 2
    err = capsys.readouterr().err
    assert "No space left on device" in err and "rerunning the same command resumes" in err
    monkeypatch.undo()
    sweep.run(sweep_spec.load(spec_path), progress=False)  # space freed: the resume completes the table
    pd.testing.assert_frame_equal(results(run), results(finished))


# ---- bad input, generated ----------------------------------------------------------------------

BAD_SPEC_VALUES = [
    ("seeds = 4", ["seeds = 0", "seeds = -1", 'seeds = "many"', "seeds = 1.5", "seeds = 10000000000000",
                   "seeds = true"]),
    ('name = "tiny"', ['name = "tiny"\nseed = -1', 'name = "tiny"\nseed = 4294967296',
                       'name = "tiny"\nseed = 9223372036854775807', 'name = "tiny"\nseed = "x"']),
    ('env = "coin-at-end"', ['env = "nope"', "env = 3", 'env = "os:path"', 'env = "missing.py:X"',
                             'env = "{broken}:X"', 'env = "{raises}:X"']),
    ("height = 5", ['height = "five"', "height = 5.5", "height = 2", "height = 10000", "height = true",
                    'height = 5\nreward_weights = "x"', 'height = 5\nreward_weights = {coin = "a"}',
                    "height = 5\nmax_steps_in_episode = 1000000000000", "height = 5\nmax_steps_in_episode = 0",
                    "height = 5\nmax_steps_in_episode = 1000000000", "height = 5\nlevel_seed = 1",
                    "height = 5\nalpha = 0.1"]),
    ("alpha = [0.0, 0.5, 1.0]", ["alpha = []", "alpha = [2.0]", 'alpha = "x"', "alpha = [0.0, 0.0]",
                                 "alpha = [nan]", "reward_weights = [1]", "alpha = [inf]", "height = [5, 7]",
                                 "max_steps_in_episode = [20.5]", "num_levels = [100000000000]",
                                 "max_steps_in_episode = [100000000000]"]),
    ("update_epochs = 2", ["gamma = 5.0", "gamma = -1.0", "lr = inf", "lr = 0.0", "ent_coef = nan",
                           "ent_coef = -1.0", "hidden = 100000000", "total_timesteps = 1000000000000000",
                           "update_epochs = 0", "update_epochs = 2\nbogus = 1"]),
    ("episodes = 32", ["episodes = 0", "episodes = -3", 'episodes = "all"']),
    ("[ppo]", ["[ppo", "[ppo]]"]),
]


@pytest.fixture(scope="module")
def broken_plugins(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("plugins")
    (tmp / "broken.py").write_text("def oops(:\n")
    (tmp / "raises.py").write_text("raise RuntimeError('the plug-in fails on import')\n")
    return {"broken": tmp / "broken.py", "raises": tmp / "raises.py"}


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mutations=st.lists(st.sampled_from([(old, new) for old, news in BAD_SPEC_VALUES for new in news]),
                          min_size=1, max_size=2, unique_by=lambda m: m[0]))
def test_generated_bad_specs_end_in_one_named_line(tmp_path, capsys, broken_plugins, mutations):
    plugin = lambda text: text.replace("{broken}", str(broken_plugins["broken"])).replace(
        "{raises}", str(broken_plugins["raises"]))
    replace = {old: plugin(new) for old, new in mutations}
    path = write_spec(tmp_path, name="bad.toml", text=TINY, out=tmp_path / "never", **replace)
    with pytest.raises(sweep_spec.SpecError, match=f"^{path}"):
        sweep_spec.load(path)
    assert main(["sweep", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"gridsim: error: {path}") and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "never").exists()


def test_discover_on_a_sweep_without_finished_points_says_so_and_writes_nothing(finished, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    shutil.copy(finished / store_module.MANIFEST, tmp_path / "empty")
    assert main(["discover", str(tmp_path / "empty")]) == 2
    assert "no finished sweep points yet" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "empty").iterdir()] == [store_module.MANIFEST]


def test_what_cannot_fit_the_device_is_refused_before_any_work_naming_the_setting(finished, tmp_path, capsys):
    spec_path = write_spec(tmp_path, **{"episodes = 32": "episodes = 100000000"})
    assert main(["sweep", str(spec_path)]) == 2
    assert capsys.readouterr().err.startswith("gridsim: error: eval.episodes: evaluating 4 agents on 100,000,000")
    assert not (tmp_path / "run").exists()
    before = tree_digest(finished)
    for command in (["inspect", str(finished)], ["discover", str(finished)],
                    ["discover", str(finished), "--agent", "0", "0"]):
        assert main([*command, "--episodes", "1000000000"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("gridsim: error: --episodes: tracing 1,000,000,000 test episodes"), err
        assert err.count("\n") == 1
    assert tree_digest(finished) == before


def test_figures_that_would_overwrite_a_file_are_refused_before_the_sweep(tmp_path, capsys):
    (tmp_path / "taken.png").write_bytes(b"x")
    spec_path = write_spec(tmp_path)
    assert main(["sweep", str(spec_path), "--figures", str(tmp_path / "taken.png")]) == 2
    assert "exists and is not a folder" in capsys.readouterr().err
    assert not (tmp_path / "run").exists() and (tmp_path / "taken.png").read_bytes() == b"x"


def test_a_closed_pipe_ends_the_listing_quietly():
    import subprocess
    import sys

    # `true` has exited before the listing starts, so every write meets a closed pipe
    done = subprocess.run(["bash", "-c", f"{sys.executable} -m experiments.cli envs | true; echo ${{PIPESTATUS[0]}}"],
                          capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parents[1])
    assert done.stdout.strip() == "0" and done.stderr == "", done.stderr


def test_sweep_files_that_are_not_utf8_are_named(tmp_path, capsys):
    text = TINY.format(env="coin-at-end", out=tmp_path / "run")
    (tmp_path / "latin1.toml").write_bytes(text.replace('"tiny"', '"tïny"').encode("latin-1"))
    assert main(["sweep", str(tmp_path / "latin1.toml")]) == 2
    assert "not UTF-8 text" in capsys.readouterr().err
    (tmp_path / "bom.toml").write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert sweep_spec.load(tmp_path / "bom.toml").name == "tiny"  # a byte-order mark is fine


@settings(max_examples=30, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(args=st.sampled_from([
    ["show", "coin-at-end", "--n", "-1"], ["show", "coin-at-end", "-o", "height=abc"],
    ["show", "coin-at-end", "-o", "width=2.5"], ["show", "nope"], ["show", "os:path"],
    ["show", "coin-at-end", "--seed", "-4"], ["show", "coin-at-end", "--seed", "99999999999"],
    ["show", "coin-at-end", "-o", "reward_weights='x'"], ["show", "coin-at-end", "-o", "max_steps_in_episode=10**12"],
    ["train", "coin-at-end", "--eval-episodes", "0"], ["train", "coin-at-end", "--seeds", "0"],
    ["train", "coin-at-end", "-o", "level_seed=3"], ["calibrate", "coin-at-end", "--episodes", "0"],
    ["report", "/no/such/sweep"], ["plot", "/no/such/sweep"], ["inspect", "/no/such/sweep"],
    ["sweep", "/no/such/file.toml"], ["sweep", "x.toml", "--executor", "cloud"],
    ["sweep", "x.toml", "--address", "auto"], ["train", "coin-at-end", "--segments", "0"],
    ["train", "coin-at-end", "--seeds", "1000000000000"], ["train", "coin-at-end", "--seeds", "1000000"],
    ["train", "coin-at-end", "--eval-episodes", "1000000000"],
    ["calibrate", "coin-at-end", "--episodes", "1000000000000"],
]))
def test_generated_bad_command_lines_exit_2_without_a_traceback(capsys, args):
    try:
        code = main(args)
    except SystemExit as exit_:  # argparse's own usage errors
        code = exit_.code
    assert code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and ("gridsim: error:" in err or "usage:" in err)


def test_inspect_of_a_sweep_rejects_zero_episodes(finished, capsys):
    assert main(["inspect", str(finished), "--episodes", "0"]) == 2
    assert "--episodes must be >= 1" in capsys.readouterr().err


def test_the_report_counts_diverged_seeds(finished, capsys):
    assert main(["report", str(finished)]) == 0
    assert "diverged" in capsys.readouterr().out.splitlines()[0]


def test_manifest_is_written_once_and_chunks_apart(finished):
    manifest = json.loads((finished / store_module.MANIFEST).read_text())
    assert "chunks" not in manifest and Store(finished).chunks()
    with pytest.raises(StoreError, match="not a sweep directory"):
        Store(finished / store_module.AGENTS).manifest()


def test_integer_and_float_sweep_values_make_one_table(tmp_path):
    """``alpha = [0, 0.5]``: one point's value is an int, the other's a float; the files still read as one."""
    import numpy as np

    from experiments import runner
    from experiments.train import SeedResults

    spec = sweep_spec.load(write_spec(tmp_path, **{"alpha = [0.0, 0.5, 1.0]": "alpha = [0, 0.5]"}))
    env, params = runner.runner_for(spec)[0].env, runner.runner_for(spec)[1]
    seeds, outcomes = spec.seeds, len(env.outcome_names)
    results = SeedResults(np.ones(seeds), np.ones((seeds, outcomes), int), np.full(seeds, 8), np.zeros(seeds, bool))
    history = type("History", (), {"episode_return": np.zeros((seeds, 1))})()
    (tmp_path / "points").mkdir()
    for i in range(2):
        table = runner.rows_for_point(env, spec, i, params.replace(**spec.points[i]), results, history)
        table.to_pandas().to_parquet(tmp_path / "points" / f"point-{i:04d}.parquet")
    table = pd.read_parquet(tmp_path / "points", columns=["point", "alpha"])
    assert list(table.alpha.unique()) == [0.0, 0.5] and table.alpha.dtype == float
