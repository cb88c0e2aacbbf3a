"""The suite's own machinery: tests that share compiled programs or results run in one worker."""

from __future__ import annotations

import pytest


@pytest.mark.xdist_group("suite-check")
def test_grouped_tests_are_sent_to_one_worker(request):
    """Under ``--dist loadgroup`` pytest-xdist sends a group to one worker by suffixing its tests' node ids
    with the group's name. pytest 9.2's node ids no longer take the suffix (pytest-xdist issue 1386):
    the groups then silently split, and every worker computes the shared sweeps and programs again."""
    if not request.config.getvalue("loadgroup"):
        pytest.skip("not under pytest -n --dist loadgroup")
    assert request.node.nodeid.endswith("@suite-check"), (
        f"{request.node.nodeid}: pytest-xdist's groups do not reach the scheduler (pytest 9.2 and later with "
        "pytest-xdist 3.8: see pyproject.toml)")
