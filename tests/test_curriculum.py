"""Curricula: the buffer keeps only finite scores, replay follows its formula, levels stay valid
after edits, settings are traced, a curriculum resumes bit for bit, and bad settings are refused."""

from __future__ import annotations

import functools
from fractions import Fraction

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import REGISTERED, TINY, env_for, through_numpy
from hypothesis import given, settings
from hypothesis import strategies as st

import gridsim
from agents import curriculum as curricula
from agents import ppo
from gridsim import edits

# six steps a rollout: some test levels (coin anywhere) finish an episode in that time, others cannot
SHORT = ppo.Config(num_envs=8, num_steps=6, total_timesteps=8 * 6 * 40, update_epochs=1, num_minibatches=2)


@functools.cache
def compiled(method: str):
    env, params = gridsim.make("coin-at-end", height=5, width=7)
    trainer = ppo.make_train(SHORT, env, curricula.Config(method=method, score="regret", buffer_size=16))
    return trainer, jax.jit(trainer.init), jax.jit(trainer.segment, static_argnums=1), params.test()


def updates(method: str, count: int, seed: int = 0):
    """The state before and the metrics of each of ``count`` updates, one at a time."""
    trainer, init, segment, params = compiled(method)
    state = init(jax.random.key(seed), params)
    steps = []
    for _ in range(count):
        after, metrics = segment(state, 1)
        steps.append((state, after, jax.tree_util.tree_map(lambda x: x[0], metrics)))
        state = after
    return steps


def test_scores_in_the_buffer_are_finite_and_new_levels_only_scored():
    """Rollouts of six steps leave many levels without a finished episode (NaN scores): none of them
    enters the buffer, and updates that only score levels leave the network untouched."""
    trained = 0
    for before, after, metrics in updates("plr", 12):
        buffer = after.curriculum.buffer
        assert np.isfinite(np.asarray(buffer.score)[np.asarray(buffer.filled)]).all()
        same = jax.tree_util.tree_all(jax.tree_util.tree_map(jnp.array_equal, before.network, after.network))
        assert same != bool(metrics.trained)
        trained += bool(metrics.trained)
    assert int(buffer.filled.sum()) >= SHORT.num_envs and trained > 0  # it did fill and replay


def test_a_just_replayed_level_has_staleness_zero_and_accel_edits_after_a_replay():
    kinds = []
    for before, after, _ in updates("accel", 12, seed=1):
        state = after.curriculum
        kinds.append(int(state.last_kind))
        stale = curricula.staleness(state.buffer, after.update)
        if int(state.last_kind) == curricula.REPLAY:
            assert (np.asarray(stale)[np.asarray(state.replay_index)] == 0).all()
        if int(before.curriculum.last_kind) == curricula.REPLAY:
            assert int(state.last_kind) == curricula.EDIT  # ACCEL scores edits of what it just replayed
    assert curricula.REPLAY in kinds and curricula.EDIT in kinds


def _hand_made_buffer(env, params):
    levels = jax.vmap(env.sample, (0, None))(jax.random.split(jax.random.key(0), 4), params)
    return curricula.Buffer(levels=levels, score=jnp.float32([0.5, 2.0, 1.0, 7.0]),
                            max_return=jnp.zeros(4), last_scored=jnp.int32([3, 5, 0, 0]),
                            filled=jnp.array([True, True, True, False]))


def test_rank_and_staleness_sampling_matches_its_formula_on_a_hand_made_buffer():
    """Scores 0.5, 2, 1 (and an empty slot), temperature 1/2, staleness weight 1/4, 5 updates done."""
    env, params = gridsim.make("coin-at-end", height=5, width=7)
    buffer = _hand_made_buffer(env, params)
    settings_ = curricula.Params(replay_prob=jnp.float32(1.0), temperature=jnp.float32(0.5),
                                 staleness=jnp.float32(0.25), edits=jnp.int32(0))
    # by hand: ranks 3, 1, 2; (1 / rank) ** 2 = 1/9, 1, 1/4 (sum 49/36); staleness 2, 0, 5 (sum 7)
    by_rank = [Fraction(4, 49), Fraction(36, 49), Fraction(9, 49), 0]
    stale = [Fraction(2, 7), 0, Fraction(5, 7), 0]
    expected = np.array([float(Fraction(3, 4) * r + Fraction(1, 4) * s) for r, s in zip(by_rank, stale)])
    p = np.asarray(curricula.replay_distribution(buffer, settings_, 5))
    np.testing.assert_allclose(p, expected, rtol=1e-6)
    # and a replay's first draw follows it; its draws are distinct levels
    config = curricula.Config(method="plr", buffer_size=4)
    state = curricula.init(config, settings_, jax.tree_util.tree_map(lambda x: x[:2], buffer.levels))
    state = state.replace(buffer=buffer)
    draw = jax.jit(jax.vmap(lambda k: curricula.plan(config, env, state, params, k, 5).index))
    drawn = np.asarray(draw(jax.random.split(jax.random.key(1), 4000)))
    np.testing.assert_allclose(np.bincount(drawn[:, 0], minlength=4) / len(drawn), expected, atol=0.01)
    assert (drawn[:, 0] != drawn[:, 1]).all() and (drawn < 3).all()


@functools.cache
def compiled_edits(name):
    env, params = env_for(name)
    # the edits every environment gets (an environment's own may do more, e.g. make an object come or go:
    # check_env plays levels edited by all of them under every invariant)
    generic = tuple(n for n in edits.level_edits(env) if n not in env.level_edits())

    def edit(key, count):
        k_levels, k_edit = jax.random.split(key)
        levels = jax.vmap(env.sample, (0, None))(jax.random.split(k_levels, 64), params.test())
        return levels, jax.vmap(edits.edit, (None, 0, 0, None, None, None))(env, jax.random.split(k_edit, 64),
                                                                           levels, params, count, generic)

    return env, jax.jit(edit)


@pytest.mark.parametrize("name", REGISTERED)
@settings(max_examples=4, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**31 - 1), count=st.integers(0, 12))
def test_edits_keep_levels_valid(name, seed, count):
    """Under the edits every environment gets: agent and live objects on free cells, never on each other
    unless they started so, objects that shared a cell still share it, the border whole, and nothing but
    walls, positions and the agent changed."""
    env, edit = compiled_edits(name)
    before, after = jax.device_get(edit(jax.random.key(seed), count))
    n, k = np.indices(after.obj_alive.shape)
    rows, cols = after.agent[:, 0], after.agent[:, 1]
    assert not after.walls[np.arange(64), rows, cols].any()
    assert not (after.walls[n, after.obj_pos[..., 0], after.obj_pos[..., 1]] & after.obj_alive).any()
    for side in (after.walls[:, 0, :], after.walls[:, -1, :], after.walls[:, :, 0], after.walls[:, :, -1]):
        assert side.all()
    on_agent = lambda lv: np.all(lv.obj_pos == lv.agent[:, None, :], axis=-1) & lv.obj_alive
    assert not (on_agent(after) & ~on_agent(before)).any()
    together = lambda lv: np.all(lv.obj_pos[:, :, None] == lv.obj_pos[:, None, :], axis=-1)
    alive = before.obj_alive[:, :, None] & before.obj_alive[:, None, :]
    np.testing.assert_array_equal(together(after) & alive, together(before) & alive)
    np.testing.assert_array_equal(after.obj_alive, before.obj_alive)
    np.testing.assert_array_equal(after.inventory, before.inventory)
    if count == 0:
        np.testing.assert_array_equal(after.agent, before.agent)


def test_numeric_curriculum_settings_keep_one_trace():
    env, params = gridsim.make("coin-at-end", height=5, width=7)
    trainer = ppo.make_train(SHORT, env, curricula.Config(method="accel", buffer_size=16))

    @jax.jit
    @chex.assert_max_traces(n=1)
    def two_updates(key, settings_):
        return trainer.segment(trainer.init(key, params, settings_), 2)[1].trained

    chex.clear_trace_counter()
    for replay_prob, temperature, staleness, count in ((0.5, 0.3, 0.3, 5), (0.9, 1.0, 0.0, 2), (0.0, 0.1, 1.0, 0)):
        two_updates(jax.random.key(0), curricula.Config(method="accel", replay_prob=replay_prob,
                                                        temperature=temperature, staleness=staleness,
                                                        edits=count).params())


def test_kill_and_resume_mid_curriculum_is_bit_identical():
    """Six updates at once equal three, a checkpoint through numpy (as a file holds it), and three more:
    the buffer, its scores and the weights alike."""
    trainer, init, segment, params = compiled("accel")
    state = init(jax.random.key(7), params)
    whole, _ = segment(state, 6)
    half, _ = segment(state, 3)
    restored = through_numpy(half)
    resumed, _ = segment(restored, 3)
    chex.assert_trees_all_equal(whole.network, resumed.network)
    chex.assert_trees_all_equal(whole.curriculum, resumed.curriculum)


def test_a_plugin_environment_trains_with_accel_and_exact_regret(tmp_path):
    """The example plug-in, with no code for curricula, edits or values: its sweep runs and every
    evaluation episode has an exact value."""
    from experiments import spec as sweep_spec
    from experiments import sweep
    from experiments.store import Store

    text = TINY.format(env="buried_treasure.py:BuriedTreasure", out=tmp_path / "run").replace(
        "alpha = [0.0, 0.5, 1.0]", "alpha = [0.0]").replace("seeds = 4", "seeds = 2").replace(
        "[eval]", '[curriculum]\nmethod = "accel"\nscore = "regret"\nbuffer_size = 16\nedits = 3\n\n[eval]').replace(
        "num_steps = 16", "num_steps = 48")  # its episodes last at most 36 steps: each is scored
    path = tmp_path / "plugin.toml"
    path.write_text(text)
    (tmp_path / "buried_treasure.py").write_text(open("examples/buried_treasure.py").read())
    table = Store(sweep.run(sweep_spec.load(path), progress=False)).results()[0]
    assert (table["exact_value_share"] == 1.0).all()
    assert (table["test_regret"] >= 0).all()


def exit_code(argv) -> int:
    from experiments.cli import main

    try:
        return main(argv)
    except SystemExit as exit_:
        return exit_.code


BAD = [
    ('[curriculum]\nmethod = "plr"\nbuffer_size = 4', "buffer_size (4) is smaller than a batch"),
    ('[curriculum]\nmethod = "plr"\nreplay_prob = 1.5', "replay_prob must lie in [0, 1]"),
    ('[curriculum]\nmethod = "plr"\nscore = "regret"', "needs exact values, and monster-world is stochastic"),
    ('[curriculum]\nmethod = "plr"\nscore = "variance"', "curriculum.score must be one of"),
    ('[curriculum]\nmethod = "accel"\nedits = -1', "edits must be a whole number"),
    ('[curriculum]\nmethod = "plr"\ntemperature = 0', "temperature must be > 0"),
    ('[curriculum]\nmethod = "accel"\nedits = 0', "edits must be >= 1 for 'accel'"),
]


@pytest.mark.parametrize("section, message", BAD)
def test_bad_curriculum_settings_exit_2_with_one_line_before_training(section, message, tmp_path, capsys,
                                                                       monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr("experiments.executors.run_chunk", never)
    env = "monster-world" if "monster" in message else "coin-at-end"
    text = TINY.format(env=env, out=tmp_path / "run").replace("[eval]", section + "\n\n[eval]")
    if env == "monster-world":
        text = text.replace("height = 5\nwidth = 7", "height = 6\nwidth = 6")
    path = tmp_path / "bad.toml"
    path.write_text(text)
    code = exit_code(["sweep", str(path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "run").exists()


def test_a_curriculum_setting_swept_without_a_curriculum_is_refused(tmp_path, capsys):
    text = TINY.format(env="coin-at-end", out=tmp_path / "run").replace("[sweep]", "[sweep]\nreplay_prob = [0.1]")
    path = tmp_path / "bad.toml"
    path.write_text(text)
    code = exit_code(["sweep", str(path)])
    assert code == 2 and "'sweep.replay_prob' is a curriculum setting" in capsys.readouterr().err


def test_compare_prints_and_draws_sweeps_side_by_side(finished, tmp_path, capsys):
    """Capable seeds by default; with --all-seeds the tests' point whose agents are not capable (alpha 0.5)
    is rated too."""
    code = exit_code(["compare", str(finished), str(finished), "--out", str(tmp_path / "figures")])
    capable_only = capsys.readouterr().out
    assert code == 0 and capable_only.count(f"{finished.name}: dr") == 2 and "regret" in capable_only
    # the second sweep, against the first at each point: the same agents, no difference
    assert capable_only.count("misgen. minus the first sweep's: +0.0 points") >= 1
    assert "Wilcoxon p = 1.00, paired by seed" in capable_only and "-0.0 points" not in capable_only
    assert (tmp_path / "figures" / "comparison.png").is_file()
    exit_code(["compare", str(finished), "--out", str(tmp_path), "--all-seeds"])
    every_seed = capsys.readouterr().out
    assert every_seed.count("misgen.      -") < capable_only.count("misgen.      -") / 2
    assert "every seed" in every_seed


def test_compare_pairs_the_same_seeds_and_never_pools_points(finished):
    """Hand-set rates at alpha 0: four seeds at 0% in the first sweep, 10-40% in the second. Paired by
    seed, every difference is positive: the exact two-sided signed-rank p is 2 / 2**4. The same rates
    on other seeds are compared unpaired; a first sweep that sweeps other settings is not compared."""
    from experiments.report import format_comparison, load, summarize

    table, swept, _ = load(finished)
    table = table.assign(capable=True, diverged=False, misgeneralization_rate=0.0)
    mine = table.copy()
    mine.loc[mine.point == 0, "misgeneralization_rate"] = [0.1, 0.2, 0.3, 0.4]
    others = mine.assign(seed=mine.seed + 100)
    sweeps = lambda *tables: [(f"sweep {i}", summarize(t, swept), swept) for i, t in enumerate(tables)]
    text = format_comparison(sweeps(table, mine, others), [table, mine, others])
    paired, unpaired = text.split("sweep 2")
    assert "misgen. minus the first sweep's: +25.0 points" in paired
    assert "Wilcoxon p = 0.12, paired by seed" in paired and "Mann-Whitney" not in paired
    assert "+25.0 points" in unpaired and "Mann-Whitney p = " in unpaired and "Wilcoxon" not in unpaired
    wider = [("first", summarize(table, swept + ["num_levels"]), swept + ["num_levels"]), *sweeps(mine)[:1]]
    text = format_comparison(wider, [table, mine])
    assert "minus the first" not in text and "not compared with the first sweep" in text


def test_maxmc_scores_a_level_by_the_best_return_of_its_own_episodes():
    """By hand: a replayed level once returned 1.5 and now 0.5, its steps' mean value 0.2: 1.5 - 0.2;
    a new level returning 0.5 scores 0.5 - 0.2, whatever the buffer slot a replay would have drawn holds."""
    env, params = gridsim.make("coin-at-end", height=5, width=7)
    buffer = _hand_made_buffer(env, params).replace(max_return=jnp.float32([1.5, 1.5, 1.5, 1.5]))
    config = curricula.Config(method="plr", score="maxmc", buffer_size=4)
    state = curricula.init(config, config.params(), buffer.levels).replace(buffer=buffer)
    levels = jax.tree_util.tree_map(lambda x: x[:1], buffer.levels)
    for kind, expected in ((curricula.REPLAY, 1.3), (curricula.NEW, 0.3)):
        plan = curricula.Plan(levels=levels, kind=jnp.int32(kind), index=jnp.int32([0]))
        after = curricula.record(config, state, plan, jnp.float32([jnp.nan]), jnp.float32([0.5]),
                                 jnp.float32([0.2]), 6).buffer
        score = after.score[0] if kind == curricula.REPLAY else after.score[after.last_scored == 6][0]
        np.testing.assert_allclose(score, expected, rtol=1e-6)


def test_regret_on_an_environment_whose_levels_have_no_exact_value_is_refused(tmp_path, capsys):
    """Keys and chests that do not declare their keys consumable: every value is NaN, so no level would be
    scored and training would never replay; the sweep is refused before it starts."""
    (tmp_path / "undeclared.py").write_text(
        "import gridsim\n\nclass Undeclared(gridsim.KeysAndChests):\n    consumable_kinds = ()\n")
    text = TINY.format(env="undeclared.py:Undeclared", out=tmp_path / "run").replace(
        "[eval]", '[curriculum]\nmethod = "plr"\nscore = "regret"\n\n[eval]').replace(
        "width = 7", "width = 7\nmax_keys = 2\nmax_chests = 2")
    (tmp_path / "bad.toml").write_text(text)
    code = exit_code(["sweep", str(tmp_path / "bad.toml")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "has an exact value" in err, err
