"""The public face: make/register/plug-ins, bad input, no recompilation, determinism, vmapping."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ENV_NAMES, SMALL, small_env

import gridsim
from gridsim import rng


def test_make_returns_env_and_params_with_spaces(env_name):
    env, params = small_env(env_name)
    assert env.action_space(params).n == 4
    obs, state = jax.jit(env.reset)(jax.random.key(0), params)
    assert obs.shape == env.observation_space(params).shape
    assert env.observation_space(params).contains(obs)
    assert int(params.max_steps_in_episode) >= 1
    assert env.true_goal in env.event_names and set(env.proxies) <= set(env.event_names)
    assert env.outcome_names[:2] == ("fail", "true")


@pytest.mark.parametrize(
    "name, overrides, message",
    [
        ("no-such-env", {}, "unknown environment 'no-such-env'"),
        ("coin-at-end", {"bogus": 1}, "unknown option"),
        ("coin-at-end", {"alpha": 1.5}, "alpha must lie in"),
        ("coin-at-end", {"width": 3}, "grid too small"),
        ("coin-at-end", {"observation": "pixels"}, "observation must be one of"),
        ("keys-and-chests", {"height": 4, "width": 4}, "grid too small: keys-and-chests needs 7 free cells"),
        ("keys-and-chests", {"train_keys": 9}, "train_keys must lie in"),
        ("keys-and-chests", {"obstacle_density": 1.0}, "obstacle_density"),
        ("cheese-in-corner", {"corner_size": 0}, "corner_size must lie in"),
        ("cheese-in-corner", {"reward_weights": {"gold": 1.0}}, "unknown events"),
        ("cheese-in-corner", {"max_steps_in_episode": 0}, "max_steps_in_episode must lie in \\[1, 65536\\], got 0"),
        ("cheese-in-corner", {"proxies": ("moon",)}, "goal 'moon' is not an event"),
        ("nomodule_xyz:Env", {}, "cannot import plug-in module"),
        ("examples/plugins.py:Nothing", {}, "has no attribute 'Nothing'"),
    ],
)
def test_bad_input_raises_a_clear_error(name, overrides, message):
    with pytest.raises(ValueError, match=message):
        gridsim.make(name, **overrides)


def test_alpha_outside_unit_interval_rejected_by_train_and_batch():
    _, params = small_env("coin-at-end")
    for bad in (-0.1, 1.01, float("nan")):
        with pytest.raises(ValueError, match="alpha"):
            params.train(alpha=bad)
    with pytest.raises(ValueError, match="alpha"):
        params.train_batch(jnp.array([0.0, 2.0]))


def test_changing_traced_params_does_not_recompile():
    env, params = small_env("cheese-in-corner")

    @jax.jit
    @chex.assert_max_traces(n=1)
    def rollout_return(key, params):
        obs, state = env.reset(key, params)
        obs, state, reward, done, info = env.step(key, state, 0, params)
        return reward

    key = jax.random.key(0)
    for p in (params, params.train(0.0), params.train(0.5), params.test(), params.train(0.2, num_levels=7),
              params.replace(corner_size=3, max_steps_in_episode=10, reward_weights={"cheese": 2.0, "corner": 0.5},
                             level_seed=3)):
        rollout_return(key, p)


def test_a_batch_of_params_is_one_compiled_call():
    env, params = small_env("coin-at-end")
    alphas = jnp.array([0.0, 0.25, 0.5, 1.0])
    batch = params.train_batch(alphas)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def coin_elsewhere(keys, batch):
        reset = jax.vmap(jax.vmap(env.reset, (0, None)), (None, 0))
        _, states = reset(keys, batch)
        level = states.level
        at_end_of_row = (level.obj_pos[..., 0, 0] == level.agent[..., 0]) & (level.obj_pos[..., 0, 1] == env.width - 2)
        return (~at_end_of_row).mean(axis=1)

    keys = jax.random.split(jax.random.key(0), 2000)
    rates = np.asarray(coin_elsewhere(keys, batch))
    # a test coin is on any of the 14 interior cells but the agent's; 13 of them are not the end of its row
    np.testing.assert_allclose(rates, np.asarray(alphas) * 13 / 14, atol=0.04)
    coin_elsewhere(keys, params.train_batch(jnp.array([0.1, 0.2, 0.3, 0.4])))  # no retrace


def _level_ids(levels) -> list[bytes]:
    parts = [np.asarray(x).reshape(len(np.asarray(levels.agent)), -1) for x in jax.tree_util.tree_leaves(levels)]
    return [b"".join(p[i].tobytes() for p in parts) for i in range(len(parts[0]))]


def test_a_fixed_level_set_is_exactly_num_levels_levels_and_its_seed_picks_them():
    env, params = small_env("cheese-in-corner")
    keys = jax.random.split(jax.random.key(0), 3000)
    reset = jax.jit(jax.vmap(env.reset, (0, None)))
    five = set(_level_ids(reset(keys, params.train(0.5, num_levels=5))[1].level))
    assert len(five) == 5
    again = set(_level_ids(reset(jax.random.split(jax.random.key(1), 3000), params.train(0.5, num_levels=5))[1].level))
    assert again == five  # other keys replay the same five levels
    other_seed = set(_level_ids(reset(keys, params.train(0.5, num_levels=5).replace(level_seed=1))[1].level))
    assert not other_seed & five
    # fresh levels: thousands (7x7 mazes come in 192 shapes, so some repeat)
    assert len(set(_level_ids(reset(keys, params.train(0.5))[1].level))) > 2000


def test_auto_reset_draws_fresh_walls_every_episode():
    """One environment, 300 one-step episodes: the mazes keep changing (no pool of layouts)."""
    env, params = small_env("cheese-in-corner")
    params = params.replace(max_steps_in_episode=1)

    @jax.jit
    def walls_seen(key):
        _, state = env.reset(key, params)

        def one(state, k):
            _, state, _, done, _ = env.step(k, state, 0, params)
            return state, state.level.walls

        return jax.lax.scan(one, state, jax.random.split(key, 300))[1]

    walls = np.asarray(walls_seen(jax.random.key(0)))
    # 7x7 mazes come in 192 shapes (spanning trees of a 3x3 lattice); a pool of layouts would show its size
    assert len({w.tobytes() for w in walls}) > 100


def test_a_layout_bank_supplies_the_walls_and_the_placement_stays_fresh():
    env, params = small_env("cheese-in-corner")
    params = params.replace(max_steps_in_episode=1)
    bank = jax.jit(lambda key: env.sample_layouts(key, params, 8))(jax.random.key(7))
    bank_walls = {w.tobytes() for w in np.asarray(jax.vmap(lambda layout: layout.walls)(bank.layouts))}
    assert len(bank_walls) > 1

    @jax.jit
    def levels_seen(key):
        _, state = env.reset(key, params, bank)

        def one(state, k):
            _, state, *_ = env.step(k, state, 0, params, bank)
            return state, state.level

        return jax.lax.scan(one, state, jax.random.split(key, 300))[1]

    levels = levels_seen(jax.random.key(0))
    walls = np.asarray(levels.walls)
    assert {w.tobytes() for w in walls} <= bank_walls  # walls only from the bank
    assert len(set(_level_ids(levels))) > 100  # placements still fresh: far more levels than walls
    agent, cheese = np.asarray(levels.agent), np.asarray(levels.obj_pos[:, 0])
    rows = np.arange(len(walls))
    assert not walls[rows, agent[:, 0], agent[:, 1]].any() and not walls[rows, cheese[:, 0], cheese[:, 1]].any()
    # an environment whose walls never change has nothing to bank
    coin, coin_params = small_env("coin-at-end")
    assert coin.sample_layouts(jax.random.key(0), coin_params, 8) is None


def test_a_layout_bank_of_a_fixed_level_set_holds_whole_levels_of_that_set():
    env, params = small_env("cheese-in-corner")
    params = params.train(0.5, num_levels=5)
    reset = jax.jit(jax.vmap(env.reset, (0, None, None)))
    keys = jax.random.split(jax.random.key(0), 2000)
    the_set = set(_level_ids(reset(keys, params, None)[1].level))
    bank = jax.jit(lambda key: env.sample_layouts(key, params, 3))(jax.random.key(1))
    banked = set(_level_ids(reset(keys, params, bank)[1].level))
    assert banked <= the_set and 1 <= len(banked) <= 3


def test_optimistic_resets_hand_the_drawn_levels_to_the_environments_that_finished_in_turn():
    """Eight environments, five of which end on this step, and three new levels: the finished ones
    take levels 0, 1, 2, 0, 1 in the order they stand; the others go on exactly as ``transition``
    leaves them. Without ``resets`` the batched step is ``vmap(step)``."""
    env, params = small_env("cheese-in-corner")
    params = params.replace(max_steps_in_episode=10)
    ending = np.array([False, True, True, False, True, True, True, False])
    key, actions = jax.random.key(1), jnp.zeros(8, jnp.int32)

    @jax.jit
    def run(key):
        _, states = jax.vmap(env.reset, (0, None))(jax.random.split(jax.random.key(0), 8), params)
        states = states.replace(time=jnp.where(ending, 9, 0))  # the tenth step ends these by time
        bank = env.sample_layouts(jax.random.key(2), params, 4)
        optimistic = env.step_batch(key, states, actions, params, bank, resets=3)
        exact = env.step_batch(key, states, actions, params, bank)
        vmapped = jax.vmap(env.step, (0, 0, 0, None, None))(rng.split(key, 8), states, actions, params, bank)
        drawn = jax.vmap(env.sample, (0, None, None))(rng.split(key, 3), params, bank)
        final = jax.vmap(env.transition, (0, 0, None))(states, actions, params)[0]
        return optimistic, exact, vmapped, drawn, final

    (obs, new, _, done, info), exact, vmapped, drawn, final = jax.device_get(run(key))
    assert (done == ending).all()
    take = lambda tree, i: jax.tree_util.tree_map(lambda x: x[i], tree)
    expected = {1: take(drawn, 0), 2: take(drawn, 1), 4: take(drawn, 2), 5: take(drawn, 0), 6: take(drawn, 1)}
    for i in range(8):
        want = expected.get(i, take(final.level, i))
        chex.assert_trees_all_equal(take(new.level, i), want)
        np.testing.assert_array_equal(obs[i], env.observe(want))
        assert new.time[i] == (0 if ending[i] else 1)
    chex.assert_trees_all_equal(info["final_state"].level, final.level)  # where each episode ended
    chex.assert_trees_all_equal(exact, vmapped)
    with pytest.raises(ValueError, match="resets must be >= 1"):
        env.step_batch(key, new, actions, params, resets=0)


def test_register_and_plugin_file_run_through_make():
    env, params = gridsim.make("examples/plugins.py:FlagOnTop", height=7, width=7, top_rows=2)
    assert "flag-on-top" in gridsim.registered()  # the file registered it on import
    assert env.outcome_names == ("fail", "true", "proxy:top_row")
    reset = jax.jit(jax.vmap(env.reset, (0, None)))
    keys = jax.random.split(jax.random.key(0), 256)
    flag_rows = lambda p: set(np.asarray(reset(keys, p)[1].level.obj_pos[:, 0, 0]).tolist())
    assert flag_rows(params.train(0.0)) == {1, 2} and flag_rows(params.test()) == {1, 2, 3, 4, 5}
    obs, state = jax.jit(env.reset)(jax.random.key(1), params)
    obs, state, reward, done, info = jax.jit(env.step)(jax.random.key(2), state, 0, params)
    assert set(info["events"]) == {"flag", "top_row"}


def test_plugin_event_proxy_and_reward_on_a_builtin_env():
    env, params = gridsim.make("examples/plugins.py:cheese_with_top_row_proxy", height=7, width=7)
    assert env.proxies == ("corner", "top_row") and env.outcome_names[-1] == "proxy:top_row"
    walls = np.asarray(gridsim.layouts.open_room(7, 7))
    level = env.make_level(walls, agent=(2, 3), obj_pos=[(5, 5)], obj_alive=[True])
    action, _ = jax.jit(gridsim.oracles.policy(env, "top_row").act)(None, None, env.start(level), params, (), True)
    assert int(action) == 0  # the plug-in's target for top_row: its oracle heads up
    _, state = env.reset_to_level(level, params)
    _, state, reward, done, info = env.step(jax.random.key(0), state, 0, params)  # up, onto the top row
    assert bool(info["events"]["top_row"]) and float(reward) == pytest.approx(-0.01)
    assert not bool(done)


def test_a_plugin_measure_counts_events_per_episode():
    """A measurement declared from outside (``extra_measures``), against an independent record of the
    same episodes: the coin is terminal, so a first episode touched it once exactly when its outcome is
    ``true``; and the end column is reached at most once before the episode ends."""
    env, params = gridsim.make("coin-at-end", height=5, width=7,
                               extra_measures={"coins": lambda start, counts, params: counts["coin"],
                                               "start_row": lambda start, counts, params: start.agent[0]})
    play = jax.jit(lambda key: gridsim.evaluate(env, params.test(), gridsim.random_policy(env), key, 64,
                                                int(params.max_steps_in_episode), label=False))
    result = jax.device_get(play(jax.random.key(4)))
    coins, start_row = np.asarray(result.measures).T
    np.testing.assert_array_equal(coins, result.outcome == gridsim.OUTCOME_TRUE)
    assert ((start_row >= 1) & (start_row <= 3)).all()
    with pytest.raises(ValueError, match="redefine built-in measures"):
        gridsim.make("absent-supervisor", extra_measures={"shortcut_watched": lambda *a: 0.0})


def test_a_goal_without_a_target_is_named_when_the_env_is_made():
    def x_event(before, after, params):
        return after.agent[1] == 2

    with pytest.raises(ValueError, match=r"no target to plan for goal\(s\) \['x'\].*extra_targets"):
        gridsim.make("cheese-in-corner", extra_events={"x": x_event}, proxies=("corner", "x"))


def test_register_rejects_duplicates_unless_overwriting():
    with pytest.raises(ValueError, match="already registered"):
        gridsim.register("coin-at-end", gridsim.CoinAtEnd)
    gridsim.register("coin-at-end", gridsim.CoinAtEnd, overwrite=True)


def test_gymnax_adapter_serves_gymnax_1_step_and_its_own_auto_reset_agrees():
    pytest.importorskip("gymnax")
    from gymnax.environments.environment import Environment

    from gridsim.gymnax_adapter import GymnaxEnv

    env, params = small_env("coin-at-end")
    genv = GymnaxEnv(env, params)
    assert genv.num_actions == 4 and genv.observation_space(params).shape == env.observation_space().shape

    @jax.jit
    def rollout(key):  # a loop written against gymnax 1.0's API
        obs, state = genv.reset(key, genv.default_params)

        def body(carry, k):
            obs, state = carry
            action = genv.action_space(genv.default_params).sample(k)
            obs, state, reward, terminated, truncated, info = genv.step(k, state, action, genv.default_params)
            return (obs, state), (reward, terminated, truncated, info["final_observation"], obs)

        return jax.lax.scan(body, (obs, state), jax.random.split(key, 64))[1]

    rewards, terminated, truncated, final_obs, obs = jax.device_get(rollout(jax.random.key(0)))
    assert rewards.shape == (64,) and (terminated | truncated).any() and not (terminated & truncated).any()
    ongoing = ~(terminated | truncated)
    np.testing.assert_array_equal(final_obs[ongoing], obs[ongoing])  # only an ended episode's obs is a reset
    assert (final_obs[~ongoing] != obs[~ongoing]).any()

    # gymnax's own step, built from the adapter's step_env, reset_env and is_truncated, matches on a step
    _, state = jax.jit(genv.reset)(jax.random.key(1), params)
    our_step = jax.jit(genv.step)
    for action in range(4):
        ours = our_step(jax.random.key(2), state, action, params)
        theirs = Environment.step(genv, jax.random.key(2), state, action, params)
        for i in (2, 3, 4):  # reward, terminated, truncated
            assert bool(jnp.all(ours[i] == theirs[i]))
        np.testing.assert_array_equal(ours[5]["final_observation"], theirs[5]["final_observation"])


def test_rejax_ppo_trains_unchanged_on_the_five_value_adapter():
    rejax = pytest.importorskip("rejax")
    from gridsim.gymnax_adapter import PureJaxRLEnv

    env, params = small_env("coin-at-end")
    genv = PureJaxRLEnv(env, params)
    obs, state = jax.jit(genv.reset)(jax.random.key(0), params)
    assert len(jax.jit(genv.step)(jax.random.key(1), state, 0, params)) == 5
    algo = rejax.PPO.create(env=genv, env_params=params, total_timesteps=4096, num_envs=16, num_steps=32,
                            num_epochs=2, num_minibatches=2, eval_freq=4096, skip_initial_evaluation=True)
    train_state, (lengths, returns) = jax.jit(algo.train)(jax.random.key(0))
    assert int(train_state.global_step) >= 4096
    assert np.isfinite(np.asarray(returns)).all() and np.asarray(lengths).min() >= 1


def test_cli_lists_envs_and_writes_sheet_and_gif(tmp_path, capsys):
    from experiments.cli import main

    assert main(["envs"]) == 0
    listed = capsys.readouterr().out
    for name in ENV_NAMES:
        assert name in listed
    out, gif = tmp_path / "sheet.png", tmp_path / "episode.gif"
    args = ["show", "coin-at-end", "--alpha", "0", "--n", "3", "--out", str(out), "--gif", str(gif)]
    assert main(args + [f"-o{k}={v}" for k, v in SMALL["coin-at-end"].items()]) == 0
    from PIL import Image

    assert Image.open(out).size[0] > 100
    frames = Image.open(gif)
    assert frames.n_frames >= 2


def test_cli_calibrate_bounds_the_metric_with_the_oracles(capsys):
    from experiments.cli import main

    options = [f"-o{k}={v}" for k, v in SMALL["coin-at-end"].items()]
    assert main(["calibrate", "coin-at-end", "--episodes", "512", *options]) == 0
    lines = {line.split()[1]: line.split()[2:] for line in capsys.readouterr().out.splitlines()
             if line.startswith("oracle:")}
    # columns: fail, true, proxy:end, misgeneralization
    assert lines["coin"] == ["0.0%", "100.0%", "0.0%", "0.0%"]
    assert lines["end"] == ["0.0%", "0.0%", "100.0%", "100.0%"]
    assert main(["calibrate", "coin-at-end", "--episodes", "0"]) == 2
    assert "--episodes must be >= 1" in capsys.readouterr().err


def test_cli_bad_input_exits_2_with_a_message(tmp_path, capsys):
    from experiments.cli import main

    assert main(["show", "nope"]) == 2
    assert "unknown environment 'nope'" in capsys.readouterr().err
    assert main(["show", "coin-at-end", "--alpha", "-1", "--out", str(tmp_path / "x.png")]) == 2
    assert "alpha" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()
    with pytest.raises(SystemExit) as exit_info:
        main(["show"])
    assert exit_info.value.code == 2


def test_render_shows_each_object():
    from gridsim.render import COLOURS, rgb

    env, params = small_env("keys-and-chests")
    _, state = jax.jit(env.reset)(jax.random.key(0), params.test())
    image = rgb(env, state, cell=8)
    assert image.shape == (env.height * 8, env.width * 8, 3) and image.dtype == np.uint8
    colours = {tuple(c) for c in image.reshape(-1, 3)}
    for name in ("wall", "agent", "key", "chest"):
        assert COLOURS[name] in colours, name


def test_xla_cpu_flags_are_set_without_overriding_the_user():
    """The deadlock guard and one host device per usable core, each unless the user set it."""
    import os
    import subprocess
    import sys

    from gridsim._xla_flags import DEVICES, FLAG

    assert f"{FLAG}=false" in os.environ["XLA_FLAGS"]
    code = "import os, gridsim, jax; print(os.environ['XLA_FLAGS']); print(jax.local_device_count())"
    run = lambda flags: subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                       env=dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS="cpu")).stdout.splitlines()
    assert run(f"{FLAG}=true {DEVICES}=3 --xla_dump_to=/dev/null") == [
        f"{FLAG}=true {DEVICES}=3 --xla_dump_to=/dev/null", "3"]
    cores = len(os.sched_getaffinity(0))
    assert run("") == [f"{FLAG}=false {DEVICES}={cores}", str(cores)]
