"""Looking inside agents (agents.activations, agents.probes): planted answers.

A network built to hold a known variable is probed to it, one that reads nothing is probed at
chance, steering a hand-built linear policy moves its action distribution exactly as a hand
computation says, and capturing a vmapped batch of agents equals capturing each alone.
"""

import functools
import json
import shutil
import sys
from pathlib import Path

import flax.linen as nn
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings

import gridsim
from agents import activations, ppo, probes
from experiments.cli import main
from experiments.metrics import auroc
from gridsim.layouts import open_room

HEIGHT, WIDTH = 4, 5  # a 2x3 room inside walls: six cells an agent can stand on


def _env():
    env, params = gridsim.make("coin-at-end", height=HEIGHT, width=WIDTH)
    return env, params.replace(alpha=1.0)  # the coin anywhere: its cell varies too


class Planted(nn.Module):
    """A hidden layer built to copy the observation's agent channel, then a policy layer. With its
    kernel zeroed (``blind``) every activation is its bias: it reads nothing."""

    num_actions: int

    @nn.compact
    def __call__(self, hidden, obs, reset):
        x = obs.reshape(obs.shape[0], -1).astype(jnp.float32)
        agent_channel = 1  # gridsim's channels: wall, agent, then the objects
        channels = obs.shape[-1]

        def kernel(key, shape, dtype=jnp.float32):
            cells = HEIGHT * WIDTH
            return jnp.zeros((cells, channels, cells)).at[:, agent_channel, :].set(jnp.eye(cells)).reshape(shape)

        h = nn.Dense(HEIGHT * WIDTH, kernel_init=kernel, bias_init=nn.initializers.ones)(x)
        logits = nn.Dense(self.num_actions)(h)
        return hidden, logits, jnp.zeros(obs.shape[0])


def blind(variables):
    params = variables["params"]
    dense = {**params["Dense_0"], "kernel": jnp.zeros_like(params["Dense_0"]["kernel"])}
    return {**variables, "params": {**params, "Dense_0": dense}}


@functools.cache
def _planted():
    """``(trainer, variables, probe)``: the planted network, and its probe program (shared by the tests)."""
    env, params = _env()
    trainer = _trainer(env, Planted(env.num_actions))
    obs, _ = env.reset(jax.random.key(0), params)
    variables = trainer.network.init(jax.random.key(1), trainer.initial_hidden(1), obs[None], jnp.ones(1, bool))
    # one step per episode: every row is a fresh level's start, so the agent's cell varies (the policy hits a wall)
    probe = jax.jit(lambda n, k: probes.probe_agent(trainer, n, params, k, 512, 1, 256))
    return trainer, variables, probe


def _trainer(env, network=None, **config):
    trainer = ppo.make_train(ppo.Config(**{"num_envs": 4, "num_steps": 8, "total_timesteps": 64, "hidden": 8,
                                           **config}), env)
    if network is not None:
        trainer.network = network
    return trainer


@pytest.mark.parametrize("planted", [True, False])
def test_probe_finds_a_planted_variable_and_nothing_in_a_blind_network(planted):
    env, params = _env()
    trainer, variables, probe = _planted()
    scores, fitted = probe(variables if planted else blind(variables), jax.random.key(2))
    names = activations.ordered(activations.layer_sizes(trainer, params))
    assert names == ["obs", "Dense_0", "Dense_1"]
    agent = list(probes.target_classes(env)).index("cell:agent")
    hidden = names.index("Dense_0")
    assert int(fitted) == 256
    if planted:  # the hidden units are the agent's cell, one-hot: a linear probe reads it on unseen levels
        assert float(scores.accuracy[hidden, agent]) == 1.0
        assert float(scores.base_rate[hidden, agent]) < 0.5
        # a random function of the whole observation is not in six one-hot units: the probe is selective
        assert float(scores.selectivity[hidden, agent]) > 0.3
    else:  # constant activations: the probe can only guess the most common label, on every target
        np.testing.assert_allclose(scores.accuracy[hidden], scores.base_rate[hidden], atol=1e-6)


def test_probe_labels_are_hand_counted_on_a_hand_built_level():
    env, params = _env()
    # the room's cells are rows 1-2, columns 1-3; the agent at (1, 1), the coin below it, the end of its row at (1, 3)
    level = env.make_level(open_room(HEIGHT, WIDTH), agent=(1, 1), obj_pos=[(2, 1)], obj_alive=[True])
    evaluation = gridsim.evaluate(env, params, gridsim.oracles.policy(env, "coin"), jax.random.key(0), 1, 12,
                                  levels=jax.tree_util.tree_map(lambda x: x[None], level))
    labels = np.asarray(probes.targets(env, params, jax.tree_util.tree_map(lambda x: x[None, None], level), evaluation))
    got = dict(zip(probes.target_classes(env), labels[0, 0].tolist(), strict=True))
    offset_width = 2 * WIDTH - 1
    assert got == {"cell:agent": 1 * WIDTH + 1, "cell:coin": 2 * WIDTH + 1, "cell:end": 1 * WIDTH + 3,
                   "offset:coin": (1 + HEIGHT - 1) * offset_width + (0 + WIDTH - 1),
                   "offset:end": (0 + HEIGHT - 1) * offset_width + (2 + WIDTH - 1),
                   "move:coin": 2, "move:end": 1,  # down; right (MOVES: up, right, down, left)
                   "outcome": 1,  # the coin's oracle reached the coin: "true"
                   "separates:end": 1}  # each oracle reaches its own goal first


def test_ridge_probe_matches_least_squares_by_numpy():
    x = np.random.default_rng(0).normal(size=(40, 3)).astype(np.float32)
    y = (x @ np.array([[1.0], [-2.0], [0.5]], np.float32) + 3.0).astype(np.float32)
    weight = np.ones(40, np.float32)
    weight[30:] = 0  # rows left out of the fit
    probe = probes.fit(jnp.asarray(x), jnp.asarray(y), jnp.asarray(weight), ridge=0.0)
    a = np.c_[x[:30], np.ones(30)]
    expected = a @ np.linalg.lstsq(a, y[:30], rcond=None)[0]
    np.testing.assert_allclose(np.asarray(probe(jnp.asarray(x[:30]))), expected, atol=1e-3)
    wide = probes.fit(jnp.asarray(x[:2]), jnp.asarray(y[:2]), jnp.ones(2), ridge=1e-6)  # more features than rows
    np.testing.assert_allclose(np.asarray(wide(jnp.asarray(x[:2]))), y[:2], atol=1e-2)


class Linear(nn.Module):
    """logits = W2 (W1 x + b1) + b2: steering adds s * v to W1 x + b1."""

    @nn.compact
    def __call__(self, hidden, obs, reset):
        h = nn.Dense(3, name="hidden")(obs.reshape(obs.shape[0], -1))
        return hidden, nn.Dense(4, name="policy")(h), jnp.zeros(obs.shape[0])


def test_steering_a_linear_policy_moves_its_action_distribution_as_computed_by_hand():
    obs = jnp.asarray(np.random.default_rng(1).normal(size=(2, 1, 1, 5)), jnp.float32)
    module = Linear()
    variables = module.init(jax.random.key(0), jnp.zeros((2, 0)), obs, jnp.ones(2, bool))
    w1 = np.asarray(variables["params"]["hidden"]["kernel"])
    b1 = np.asarray(variables["params"]["hidden"]["bias"])
    w2 = np.asarray(variables["params"]["policy"]["kernel"])
    b2 = np.asarray(variables["params"]["policy"]["bias"])
    vector = np.array([1.0, -2.0, 0.5], np.float32)
    _, logits, _ = activations.apply(module, variables, jnp.zeros((2, 0)), obs, jnp.ones(2, bool),
                                     steer={"hidden": 3.0 * jnp.asarray(vector)})
    x = np.asarray(obs).reshape(2, -1)
    by_hand = (x @ w1 + b1 + 3.0 * vector) @ w2 + b2
    def softmax(z):
        e = np.exp(z - z.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    np.testing.assert_allclose(np.asarray(jax.nn.softmax(logits)), softmax(by_hand), atol=1e-5)
    plain = softmax((x @ w1 + b1) @ w2 + b2)
    assert np.abs(softmax(by_hand) - plain).max() > 0.01  # the vector moved it
    (_, unsteered, _), layers = activations.apply(module, variables, jnp.zeros((2, 0)), obs, jnp.ones(2, bool),
                                                  capture=True)
    np.testing.assert_allclose(np.asarray(jax.nn.softmax(unsteered)), plain, atol=1e-5)
    np.testing.assert_allclose(np.asarray(layers["hidden"]), x @ w1 + b1, atol=1e-5)


@pytest.mark.parametrize("recurrent", [False, True])
def test_capture_of_a_vmapped_batch_equals_each_agent_alone(recurrent):
    env, params = _env()
    trainer = _trainer(env, recurrent=recurrent)
    obs, _ = env.reset(jax.random.key(0), params)
    init = lambda k: trainer.network.init(k, trainer.initial_hidden(1), obs[None], jnp.ones(1, bool))
    networks = jax.vmap(init)(jax.random.split(jax.random.key(0), 2))
    capture = lambda n: activations.capture(trainer, n, params, jax.random.key(3), 4, 12)
    batch = jax.jit(jax.vmap(capture))(networks)
    for agent in range(2):
        alone = jax.jit(capture)(jax.tree_util.tree_map(lambda x, a=agent: x[a], networks))
        for name, values in alone.layers.items():
            np.testing.assert_allclose(np.asarray(batch.layers[name][agent]), np.asarray(values), rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(np.asarray(batch.action[agent]), np.asarray(alone.action))
        logits = np.asarray(alone.layers["logits"]).argmax(-1)  # the replay is the network that played
        active = np.asarray(alone.active)
        np.testing.assert_array_equal(logits[active], np.asarray(alone.action)[active])
    heads = ["actor1", "actor2", "critic1", "critic2", "logits", "value"]
    assert activations.ordered(batch.layers) == ["obs", *(["embed", "gru"] if recurrent else []), *heads]


def test_the_cnn_s_layers_are_named_in_the_order_it_computes_them():
    env, params = _env()
    sizes = activations.layer_sizes(_trainer(env, encoder="cnn"), params)
    cells = HEIGHT * WIDTH
    assert sizes == {"obs": cells * len(env.observed_channels), "conv1": cells * 16, "conv2": cells * 32,
                     "encoder": cells * 32, "actor1": 8, "actor2": 8, "critic1": 8, "critic2": 8, "logits": 4,
                     "value": 1}


def test_goal_vector_is_the_difference_of_the_two_means_counted_by_numpy():
    env, params = _env()
    params = params.replace(alpha=0.5)  # some training levels put the coin apart from the end, some not
    trainer, network, _ = _planted()
    found = activations.goal_vector(trainer, network, params, jax.random.key(2), "Dense_0", 64, 12, chunk=64)
    captured = activations.capture(trainer, network, params, jax.random.split(jax.random.key(2), 1)[0], 64, 12)
    x = np.asarray(captured.layers["Dense_0"])
    active = np.asarray(captured.active)
    coin = np.asarray(captured.level.obj_pos)[0, :, 0]  # the coin's cell on each level, at its start
    together = coin[:, 1] == WIDTH - 2  # the end is the room's last column, every row of it
    apart = ~together
    assert apart.any() and together.any()
    mean = lambda levels: x[active & levels[None, :]].mean(axis=0)
    np.testing.assert_allclose(np.asarray(found.vector), mean(apart) - mean(together), atol=1e-5)
    assert int(found.apart) == (active & apart[None, :]).sum() and int(found.together) == (active & together).sum()


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4), st.booleans()), min_size=2, max_size=12))
def test_auroc_is_the_share_of_pairs_a_positive_wins(pairs):
    scores = np.array([p[0] for p in pairs], float)
    labels = np.array([p[1] for p in pairs], bool)
    positive, negative = scores[labels], scores[~labels]
    if not len(positive) or not len(negative):
        assert np.isnan(auroc(scores, labels))
        return
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in positive for n in negative)
    assert auroc(scores, labels) == pytest.approx(wins / (len(positive) * len(negative)))


def test_cli_probe_and_steer_write_their_tables_and_refuse_bad_input(finished, tmp_path, capsys):
    run = tmp_path / "run"  # the tiny sweep (coin-at-end, alpha 0, 0.5, 1; 4 seeds), without others' derived tables
    shutil.copytree(finished, run, ignore=shutil.ignore_patterns("_derived", "_figures"))
    figures = tmp_path / "figures"
    assert main(["probe", str(run), "--episodes", "16", "--rows", "32", "--figures", str(figures)]) == 0
    out = capsys.readouterr().out
    assert "Linear probes on training levels" in out and "A warning before deployment" in out
    table = pd.read_parquet(run / "_derived" / "probe.parquet")
    layers = ["obs", "actor1", "actor2", "critic1", "critic2", "logits", "value"]
    assert list(dict.fromkeys(table.layer)) == layers
    assert len(table) == 3 * 4 * len(layers) * 9 and table.accuracy.between(0, 1).all()
    warning = pd.read_parquet(run / "_derived" / "warning.parquet")
    assert len(warning) == 12 and {"behaviour:entropy", "selectivity:actor1:offset:coin"} <= set(warning.columns)
    assert main(["steer", str(run), "--vector-episodes", "256", "--episodes", "8", "--scales", "2",
                 "--figures", str(figures)]) == 0
    assert "Steering at actor1" in capsys.readouterr().out
    steered = pd.read_parquet(run / "_derived" / "steer.parquet")
    assert len(steered) == 3 * 4 * 2 * 2 and set(steered.scale) == {0.0, 2.0}
    # scale 0 is the agent as trained: the goal and the random direction play the same levels alike
    unsteered = steered[steered.scale == 0].pivot(index=["point", "seed"], columns="direction", values="share_true")
    pd.testing.assert_series_equal(unsteered.goal, unsteered.random, check_names=False)
    assert not steered[steered.alpha == 0].vector_defined.any()  # no training level where the goals come apart
    for stem in ("probe-layers", "warning-roc", "steer"):
        assert (figures / f"{stem}.png").is_file()
    # the benchmark, in this process at the same sizes: its programs are compiled already
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import inside_throughput

    inside_throughput.main([str(run), "--smoke", "--out-dir", str(tmp_path / "bench")])
    (written,) = (tmp_path / "bench").glob("inside_throughput-*.json")
    results = json.loads(written.read_text())
    assert [r["command"] for r in results["runs"]] == ["probe", "steer"]
    assert all(r["agents"] == 12 and r["warm_median_s"] > 0 for r in results["runs"])
    assert results["runs"][1]["episodes_per_agent"] == 256 + 2 * 2 * 8
    assert results["capture_bytes_per_agent"] > 0 and results["agents_per_chunk"] >= 1
    capsys.readouterr()
    before = {p.name: p.read_bytes() for p in sorted((run / "_derived").iterdir())}
    (tmp_path / "a_file").write_text("")
    bad = [["probe", "--episodes", "2"], ["probe", "--rows", "1"], ["probe", "--ridge", "0"],
           ["probe", "--figures", str(tmp_path / "a_file")], ["steer", "--layer", "nope"], ["steer", "--layer", "obs"],
           ["steer", "--scales", "nan"], ["steer", "--vector-episodes", "10"], ["steer", "--episodes", "0"]]
    for command, *extra in bad:
        assert main([command, str(run), *extra]) == 2, extra
        err = capsys.readouterr().err.strip()
        assert err.startswith("gridsim: error:") and len(err.splitlines()) == 1, (extra, err)
    assert {p.name: p.read_bytes() for p in sorted((run / "_derived").iterdir())} == before


def test_capture_memory_grows_with_episodes_not_with_training_length():
    env, params = _env()

    def captured_bytes(episodes, total_timesteps):
        trainer = _trainer(env, total_timesteps=total_timesteps)
        network = jax.eval_shape(lambda k: trainer.init(k, params).network, jax.random.key(0))
        out = jax.eval_shape(lambda n: activations.capture(trainer, n, params, jax.random.key(0), episodes, 12),
                             network)
        return sum(x.size * x.dtype.itemsize for x in jax.tree_util.tree_leaves(out.layers))

    assert captured_bytes(8, 64) == captured_bytes(8, 64 * 1024)
    assert captured_bytes(16, 64) == 2 * captured_bytes(8, 64)
