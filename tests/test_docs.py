"""The documentation works as written: every Python block runs as pasted, every relative link and
image resolves, and every ``gridsim`` command shown exists with the options shown.

Python blocks (fenced with ``python``) of README.md and docs/**/*.md each run in a fresh interpreter
from the repository root; a block fenced ``python no-run`` is skipped (for one that needs a GPU,
say). Blocks in other languages are not executed."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RUNNABLE = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]  # Python blocks run
LINKED = [*RUNNABLE, REPO / "CHANGELOG.md", REPO / "benchmarks" / "README.md"]  # links checked
TIMEOUT_S = 120

FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.M | re.S)
INLINE_CODE = re.compile(r"`[^`\n]+`")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
# a command as shown: at the start of a shell line (or after ``&&`` or ``;``), ``gridsim``, its global
# options, then the subcommand (lower case: ``COMMAND`` and ``ENV`` are placeholders)
COMMAND = re.compile(r"(?:^|&&|;)[ \t]*(?:\$[ \t]+)?gridsim((?:[ \t]+--?[\w-]+)*)[ \t]+([a-z][\w-]*)([^;&]*)")
OPTION = re.compile(r"^-{1,2}[A-Za-z][\w-]*$")


def rel(path: Path) -> str:
    return str(path.relative_to(REPO))


def fenced(path: Path) -> list[tuple[str, str]]:
    """``(info string, body)`` of every fenced block of ``path``, in order."""
    return [(m.group(1).strip(), m.group(2)) for m in FENCE.finditer(path.read_text())]


def python_blocks() -> list:
    blocks = []
    for path in RUNNABLE:
        python = [(info, body) for info, body in fenced(path) if info.split()[:1] == ["python"]]
        for i, (info, body) in enumerate(python):
            marks = [pytest.mark.skip(reason="fenced `python no-run`")] if "no-run" in info.split() else []
            blocks.append(pytest.param(path, body, id=f"{rel(path)}:python-{i}", marks=marks))
    # the blocks that train or compile most go first, so that the two workers finish together
    heavy = ("sweep.run", "make_train", "check_env", "level_sheet")
    return sorted(blocks, key=lambda p: -sum(word in p.values[1] for word in heavy))


@pytest.mark.parametrize(("path", "code"), python_blocks())
def test_python_block_runs(path, code):
    env = dict(os.environ, MPLBACKEND="Agg")
    try:
        done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"a Python block of {rel(path)} ran past {TIMEOUT_S} s:\n{code}")
    assert done.returncode == 0, (f"a Python block of {rel(path)} failed (exit {done.returncode}):\n{code}\n"
                                  f"--- stderr (end) ---\n{done.stderr[-4000:]}")


def toml_blocks() -> list:
    return [pytest.param(path, body, id=f"{rel(path)}:toml-{i}")
            for path in RUNNABLE for i, body in enumerate(b for info, b in fenced(path) if info == "toml")]


@pytest.mark.parametrize(("path", "text"), toml_blocks())
def test_sweep_files_shown_are_valid(path, text):
    """A sweep file shown in the documentation passes the same validation as one on disk."""
    from experiments import spec

    spec.parse(text, REPO / "examples" / "shown.toml")


@pytest.mark.parametrize("path", sorted((REPO / "examples").rglob("*.toml")), ids=lambda p: rel(p))
def test_example_sweep_files_are_valid(path):
    """Every sweep file in examples/ passes validation (a setting renamed in the code fails here)."""
    from experiments import spec

    spec.load(path)


def prose(text: str) -> str:
    """``text`` without fenced blocks and inline code, where brackets are not links."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


@pytest.mark.parametrize("path", LINKED, ids=rel)
def test_relative_links_resolve(path):
    broken = []
    for target in LINK.findall(prose(path.read_text())):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):  # http(s), mailto; this page
            continue
        file = (path.parent / target.split("#")[0]).resolve()
        if not file.exists() or not file.is_relative_to(REPO):
            broken.append(target)
    assert not broken, f"{rel(path)}: links that resolve to no file in the repository: {broken}"


def parser_options(parser: argparse.ArgumentParser) -> set[str]:
    return {flag for action in parser._actions for flag in action.option_strings}


@pytest.fixture(scope="module")
def cli():
    """``(options of gridsim itself, {subcommand: its options})`` from the parser the command uses."""
    from experiments.cli import build_parser

    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return parser_options(parser), {name: parser_options(p) for name, p in sub.choices.items()}


def shown_commands(path: Path):
    """``(subcommand, options shown, line)`` for every ``gridsim`` command in a shell block (any fenced
    block but Python's) or an inline code span of ``path``."""
    text = path.read_text()
    lines = [line for info, body in fenced(path) if info.split()[:1] != ["python"] for line in body.splitlines()]
    lines += [span.strip("`") for span in INLINE_CODE.findall(FENCE.sub("", text))]
    for line in lines:
        line = re.split(r"(?:^|\s)#", line)[0]  # a comment is not part of the command
        for m in COMMAND.finditer(line):
            tokens = [t.strip("[]") for t in (m.group(1) + " " + m.group(3)).split()]
            yield m.group(2), [t for t in tokens if OPTION.match(t)], m.group(0).strip()


@pytest.mark.parametrize("path", LINKED, ids=rel)
def test_commands_shown_exist(path, cli):
    top, commands = cli
    wrong = []
    for command, options, line in shown_commands(path):
        if command not in commands:
            wrong.append(f"{line!r}: no subcommand {command!r} (gridsim has {sorted(commands)})")
            continue
        unknown = [o for o in options if o not in commands[command] | top]
        if unknown:
            wrong.append(f"{line!r}: gridsim {command} has no option {unknown}")
    assert not wrong, f"{rel(path)}:\n" + "\n".join(wrong)


def test_commands_are_found():
    """The command pattern sees the README's commands (a pattern that matched nothing would pass
    the test above vacuously)."""
    shown = {command for command, _, _ in shown_commands(REPO / "README.md")}
    assert {"envs", "show", "calibrate", "train", "sweep", "report", "plot", "inspect", "discover"} <= shown


def test_readme_is_a_front_door():
    """A short README, in the present tense of the code as it is: no commit hashes."""
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= 300
    assert not re.findall(r"`[0-9a-f]{7,40}`", text), "the README names a commit"
