"""A plug-in's mistakes are named in one line before any work: by ``gridsim.make`` (so on the command
line as ``gridsim: error: ...``, exit code 2, no traceback) and by ``gridsim.testing.check_env``.

Each plug-in below is a few lines on a 5x5 coin-at-end, written to a file as a user would write it;
nothing here trains or compiles a rollout, except the one check_env run that must find a coin in a wall."""

from __future__ import annotations

import re
import textwrap
import warnings

import pytest

import gridsim
from gridsim.testing import check_env

PLUGINS = textwrap.dedent('''
    import jax.numpy as jnp

    import gridsim


    class PluginError(Exception):
        """The plug-in's own exception class."""


    class SmallCoin(gridsim.CoinAtEnd):
        def __init__(self, height=5, width=5, **kwargs):
            super().__init__(height, width, **kwargs)


    class ForgetsEnd(SmallCoin):  # declares "end" (CoinAtEnd's event_names), never returns it
        def interact(self, level, params):
            level, events = super().interact(level, params)
            return level, {"coin": events["coin"]}


    class UndeclaredBonus(SmallCoin):  # returns "bonus", which event_names does not declare
        def interact(self, level, params):
            level, events = super().interact(level, params)
            return level, {**events, "bonus": level.agent[0] == 1}


    class UnpaidCoin(SmallCoin):  # the true goal "coin" has no reward weight, and nothing else pays
        def default_params(self):
            return super().default_params().replace(reward_weights={"end": 0.0})


    class FailsToBuild(SmallCoin):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            raise PluginError("no coins today")


    class FailsInInteract(SmallCoin):
        def interact(self, level, params):
            raise PluginError("the coin slipped")


    class FailsInSampleLevel(SmallCoin):
        def sample_level(self, key, layout, params, diverse):
            return self.make_level(layout.walls, (1, 1), [(1, 2), (1, 3)], [True, True])  # two coins, one slot


    class FailsInGoalTargets(SmallCoin):
        def goal_targets(self, level, params):
            targets = super().goal_targets(level, params)
            return {**targets, "end": targets["ends"]}


    class IfOnTraced(SmallCoin):
        def interact(self, level, params):
            level, events = super().interact(level, params)
            if events["coin"]:  # a Python if on a traced value
                level = level.replace(obj_alive=level.obj_alive & False)
            return level, events


    class CoinInWall(SmallCoin):  # on test levels the coin sits in the top-left wall
        def sample_level(self, key, layout, params, diverse):
            level = super().sample_level(key, layout, params, diverse)
            return level.replace(obj_pos=jnp.where(diverse, jnp.zeros_like(level.obj_pos), level.obj_pos))
''')


@pytest.fixture(scope="module")
def plugin_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("plugin") / "mistakes.py"
    path.write_text(PLUGINS)
    return path


def plugin(plugin_file, name):
    """The plug-in class, as ``gridsim.make`` loads it."""
    return gridsim.load(f"{plugin_file}:{name}")


def cli_error(plugin_file, name, tmp_path, capsys) -> str:
    """``gridsim show file.py:Name``: exit code 2 and one line, ``gridsim: error: ...``, before any picture."""
    from experiments.cli import main

    out = tmp_path / "x.png"
    assert main(["show", f"{plugin_file}:{name}", "--out", str(out)]) == 2
    captured = capsys.readouterr()
    err = captured.err
    assert err.startswith("gridsim: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err + captured.out
    assert not out.exists()
    return err


MADE = [  # (plug-in, what the message says): the environment and the event, or the function and the exception
    ("ForgetsEnd", r"ForgetsEnd: interact did not return event\(s\) \['end'\], declared in event_names"),
    ("UndeclaredBonus", r"UndeclaredBonus: interact returned event\(s\) \['bonus'\] not declared in event_names"),
    ("FailsToBuild", r"FailsToBuild.__init__ raised PluginError: no coins today \(mistakes.py, line \d+\)"),
    ("FailsInInteract", r"FailsInInteract.interact raised PluginError: the coin slipped \(mistakes.py, line \d+\)"),
    ("FailsInSampleLevel", r"FailsInSampleLevel.sample_level raised TypeError: .*reshape"),
    ("FailsInGoalTargets", r"FailsInGoalTargets.goal_targets raised KeyError: 'ends' \(mistakes.py, line \d+\)"),
    ("IfOnTraced", r"IfOnTraced.interact raised TracerBoolConversionError: .*use jnp.where"),
]


@pytest.mark.parametrize("name, message", MADE, ids=[name for name, _ in MADE])
def test_make_names_the_mistake_in_one_line(plugin_file, name, message):
    with pytest.raises(ValueError, match=message) as raised:
        gridsim.make(f"{plugin_file}:{name}")
    assert "\n" not in str(raised.value)
    if name.startswith("Fails") or name == "IfOnTraced":  # the plug-in and the original exception are kept
        assert str(raised.value).startswith(f"{plugin_file}:{name}: ")
        assert raised.value.__cause__ is not None


@pytest.mark.parametrize("name, message", MADE, ids=[name for name, _ in MADE])
def test_the_command_line_names_the_mistake_in_one_line_and_exits_2(plugin_file, name, message, tmp_path, capsys):
    assert re.search(message, cli_error(plugin_file, name, tmp_path, capsys))


BUILT = [(name, message) for name, message in MADE if name != "FailsToBuild"]  # built: check_env can take it


@pytest.mark.parametrize("name, message", BUILT, ids=[name for name, _ in BUILT])
def test_check_env_names_the_mistake(plugin_file, name, message):
    env = plugin(plugin_file, name)()  # built directly: make's checks are not run
    with pytest.raises(AssertionError, match=message):
        check_env(env, oracle_levels=16)


def test_a_true_goal_without_reward_is_a_one_line_warning(plugin_file, tmp_path, recwarn):
    from experiments.cli import main

    with pytest.warns(UserWarning, match=r"UnpaidCoin: the true goal 'coin' has no reward weight .* pay no event"):
        gridsim.make(f"{plugin_file}:UnpaidCoin")
    with pytest.warns(UserWarning, match=r"coin-at-end: the true goal 'coin' has reward weight 0.0"):
        gridsim.make("coin-at-end", height=5, width=5, reward_weights={"coin": 0.0})
    with pytest.warns(UserWarning, match=r"the true goal 'coin' has no reward weight .* only the proxies \['end'\]"):
        gridsim.make(f"{plugin_file}:UnpaidCoin", reward_weights={"end": 1.0})
    with pytest.raises(AssertionError, match="the true goal 'coin' has no reward weight"):
        check_env(plugin(plugin_file, "UnpaidCoin")(), oracle_levels=16)

    recwarn.clear()  # the command still runs, and says it in one line
    out = tmp_path / "sheet.png"
    assert main(["show", f"{plugin_file}:UnpaidCoin", "--n", "2", "--out", str(out)]) == 0
    assert out.exists()
    [unpaid] = [w for w in recwarn if "true goal" in str(w.message)]
    line = warnings.formatwarning(unpaid.message, unpaid.category, unpaid.filename, unpaid.lineno)
    assert line.startswith("gridsim: warning: UnpaidCoin: the true goal 'coin' has no reward weight")
    assert line.count("\n") == 1

    recwarn.clear()  # not warned: a custom reward (it can pay anything), and every shipped environment, some
    # of whose true goals pay through another event (keys-and-chests pays chest_opened, not chests_done)
    gridsim.make("coin-at-end", height=5, width=5, reward_fn=lambda events, params: events["end"] * 0.0)
    for name, factory in gridsim.registered().items():
        gridsim.make(name, **factory.small_options)
    gridsim.make("examples/plugins.py:FlagOnTop", height=7, width=7)
    gridsim.make("examples/plugins.py:cheese_with_top_row_proxy", height=7, width=7)
    gridsim.make("examples/buried_treasure.py:BuriedTreasure")
    assert not [str(w.message) for w in recwarn if "true goal" in str(w.message)]


def test_a_hook_that_raises_is_named_and_a_builtin_error_is_not_hidden():
    def reward(events, params):
        return events["cion"]

    with pytest.raises(ValueError, match=r"coin-at-end: .*reward raised KeyError: 'cion' \(test_plugin_mistakes.py"):
        gridsim.make("coin-at-end", height=5, width=5, reward_fn=reward)

    class Broken(gridsim.CoinAtEnd):  # gridsim's own code failing, with no user code on the way, is not wrapped
        def __init__(self):
            super().__init__(5, 5)
            self.kind_slots = {}

    with pytest.raises(KeyError):
        check_env(Broken())


def test_check_env_names_the_object_in_a_wall_and_its_level(plugin_file):
    env = plugin(plugin_file, "CoinInWall")()
    with pytest.raises(AssertionError, match=r"CoinInWall \(training levels, alpha=1\): a 'coin' object \(slot 0\) "
                                             r"sits in a wall at \(0, 0\), on the level environment 0 of 32 was "
                                             r"reset to \(sample_level drew it so\)"):
        check_env(env, oracle_levels=16)
