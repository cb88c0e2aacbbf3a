"""A generated corpus of inputs, most of them bad and some huge, through the command line as a user
types them: each either starts its work or ends in one named line with exit code 2. No traceback,
no hang (each case runs under an alarm). Work itself is replaced by a sentinel, so an accepted
input costs nothing: what is tested is everything a command does before it computes."""

from __future__ import annotations

import json
import math
import signal
import tempfile
from pathlib import Path

import pytest
from conftest import TINY
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from experiments.cli import main

CASE_SECONDS = 60
CORPUS = settings(max_examples=200, deadline=None, derandomize=True,
                  suppress_health_check=[HealthCheck.function_scoped_fixture])


class WouldRun(Exception):
    """The input was accepted: the command reached its work."""


@pytest.fixture(autouse=True)
def no_work(monkeypatch):
    def would_run(*args, **kwargs):
        raise WouldRun

    monkeypatch.setattr("experiments.runner.run_chunk", would_run)  # train
    monkeypatch.setattr("experiments.executors.run_chunk", would_run)  # sweep, local executor
    monkeypatch.setattr("experiments.calibrate.calibrate", would_run)
    monkeypatch.setattr("gridsim.render.level_sheet", would_run)  # show


def run_case(argv: list[str], capsys) -> None:
    """``argv`` through ``main``: accepted (its work reached), or exit 2 with one line (argparse's own
    usage errors print their usage line first)."""
    def too_long(signum, frame):
        raise TimeoutError(f"{argv} took over {CASE_SECONDS} s")

    capsys.readouterr()  # what an earlier case printed
    previous = signal.signal(signal.SIGALRM, too_long)
    signal.alarm(CASE_SECONDS)
    try:
        code = main(argv)
    except WouldRun:
        event("accepted")
        return
    except SystemExit as exit_:
        code = exit_.code
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    err = capsys.readouterr().err
    event("refused")
    assert code == 2, (argv, code, err)
    lines = [line for line in err.splitlines() if line and not line.startswith(("usage:", " "))]
    assert len(lines) == 1 and lines[0].startswith(("gridsim: error:", "gridsim ")), (argv, err)
    assert "Traceback" not in err


HUGE = st.sampled_from([0, -1, 1, 2**31 - 1, 2**31, 2**32, 2**53, 2**63 - 1, 10**12, 10**30])
NUMBERS = st.one_of(HUGE, st.integers(-(2**70), 2**70), st.floats(allow_nan=True, allow_infinity=True))
TEXT = st.one_of(NUMBERS.map(str), st.text(alphabet="ab1.-=e ", max_size=6))

FLAGS = {
    "train": ["--alpha", "--seeds", "--steps", "--num-envs", "--segments", "--eval-episodes", "--seed"],
    "calibrate": ["--episodes", "--alpha", "--seed"],
    "show": ["--n", "--alpha", "--seed"],
}
OPTIONS = ["height", "width", "alpha", "max_steps_in_episode", "num_levels", "observation", "view_radius"]


@st.composite
def command_lines(draw):
    command = draw(st.sampled_from(sorted(FLAGS)))
    argv = [command, "coin-at-end"]
    for flag in draw(st.lists(st.sampled_from(FLAGS[command]), max_size=3, unique=True)):
        argv += [flag, draw(TEXT)]
    for option in draw(st.lists(st.sampled_from(OPTIONS), max_size=2, unique=True)):
        argv += ["-o", f"{option}={draw(TEXT)}"]
    return argv


@CORPUS
@given(argv=command_lines())
def test_generated_command_lines_start_their_work_or_end_in_one_line(argv, capsys):
    run_case(argv, capsys)


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(value) if isinstance(value, str) else str(value)


TOML_INTS = st.one_of(HUGE, st.integers(-(2**63), 2**63 - 1))  # what TOML can hold
SCALARS = st.one_of(TOML_INTS, st.floats(allow_nan=True, allow_infinity=True), st.booleans(),
                    st.text(alphabet="ab1.-", max_size=4))
KEYS = {  # (section, key) -> values to try; [sweep] values are lists
    ("", "seeds"): SCALARS, ("", "seed"): SCALARS,
    ("env_options", "height"): SCALARS, ("env_options", "width"): SCALARS,
    ("env_options", "max_steps_in_episode"): SCALARS, ("env_options", "num_levels"): SCALARS,
    ("sweep", "alpha"): st.lists(SCALARS, max_size=3), ("sweep", "num_levels"): st.lists(SCALARS, max_size=3),
    ("sweep", "max_steps_in_episode"): st.lists(SCALARS, max_size=3),
    ("ppo", "total_timesteps"): SCALARS, ("ppo", "num_envs"): SCALARS, ("ppo", "num_steps"): SCALARS,
    ("ppo", "hidden"): SCALARS, ("ppo", "lr"): SCALARS, ("ppo", "num_minibatches"): SCALARS,
    ("eval", "episodes"): SCALARS, ("run", "points_per_chunk"): SCALARS,
}


@st.composite
def sweep_files(draw):
    """The tiny sweep with one to three of its keys set to generated values."""
    changed = draw(st.lists(st.sampled_from(sorted(KEYS)), min_size=1, max_size=3, unique=True))
    sections: dict[str, dict] = {}
    for section, key in changed:
        sections.setdefault(section, {})[key] = draw(KEYS[(section, key)])
    return sections


def with_keys(sections: dict[str, dict], out: Path) -> str:
    """TINY's text with the keys in ``sections`` replaced or added (``""``: the top level)."""
    lines, section = [], ""
    body = TINY.format(env="coin-at-end", out=out) + "\n[run]\n"  # every section present, [run] last
    pending = {s: dict(keys) for s, keys in sections.items()}
    for line in body.splitlines():
        if line.startswith("["):
            lines += [f"{k} = {toml_value(v)}" for k, v in pending.pop(section, {}).items()]
            section = line.strip("[]")
        key = line.split("=")[0].strip()
        if "=" in line and key in pending.get(section, {}):
            continue
        lines.append(line)
    lines += [f"{k} = {toml_value(v)}" for k, v in pending.pop(section, {}).items()]
    return "\n".join(lines) + "\n"


@CORPUS
@given(sections=sweep_files())
def test_generated_sweep_files_start_their_work_or_end_in_one_line(sections, capsys):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "generated.toml"
        path.write_text(with_keys(sections, Path(tmp) / "run"))
        run_case(["sweep", str(path)], capsys)
