"""Looking inside agents (agents.activations, agents.probes): planted answers.

A network built to hold a known variable is probed to it, one that reads nothing is probed at
chance, steering a hand-built linear policy moves its action distribution exactly as a hand
computation says, and capturing a vmapped batch of agents equals capturing each alone.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gridsim
from agents import activations, ppo, probes
from gridsim.layouts import open_room

pytestmark = pytest.mark.xdist_group("inside")

HEIGHT, WIDTH = 4, 5  # a 2x3 room inside walls: six cells an agent can stand on


def _env():
    env, params = gridsim.make("coin-at-end", height=HEIGHT, width=WIDTH)
    return env, params.replace(alpha=1.0)  # the coin anywhere: its cell varies too


class Planted(nn.Module):
    """A hidden layer that copies the observation's agent channel (``planted``), or reads nothing
    (a zero kernel, so every activation is its bias), then a policy layer."""

    num_actions: int
    planted: bool

    @nn.compact
    def __call__(self, hidden, obs, reset):
        x = obs.reshape(obs.shape[0], -1).astype(jnp.float32)
        agent_channel = 1  # gridsim's channels: wall, agent, then the objects
        channels = obs.shape[-1]
        def kernel(key, shape, dtype=jnp.float32):
            cells = HEIGHT * WIDTH
            copy = jnp.zeros((cells, channels, cells)).at[:, agent_channel, :].set(jnp.eye(cells))
            return copy.reshape(shape) if self.planted else jnp.zeros(shape)
        h = nn.Dense(HEIGHT * WIDTH, kernel_init=kernel, bias_init=nn.initializers.ones)(x)
        logits = nn.Dense(self.num_actions)(h)
        return hidden, logits, jnp.zeros(obs.shape[0])


def _trainer(env, network=None, **config):
    trainer = ppo.make_train(ppo.Config(num_envs=4, num_steps=8, total_timesteps=64, hidden=8, **config), env)
    if network is not None:
        trainer.network = network
    return trainer


@pytest.mark.parametrize("planted", [True, False])
def test_probe_finds_a_planted_variable_and_nothing_in_a_blind_network(planted):
    env, params = _env()
    trainer = _trainer(env, Planted(env.num_actions, planted))
    obs, _ = env.reset(jax.random.key(0), params)
    network = trainer.network.init(jax.random.key(1), trainer.initial_hidden(1), obs[None], jnp.ones(1, bool))
    # one step per episode: every row is a fresh level's start, so the agent's cell varies (the policy hits a wall)
    probe = jax.jit(lambda n, k: probes.probe_agent(trainer, n, params, k, 512, 1, 256))
    scores, fitted = probe(network, jax.random.key(2))
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


@pytest.mark.parametrize("recurrent,encoder", [(False, "mlp"), (False, "cnn"), (True, "mlp")])
def test_capture_of_a_vmapped_batch_equals_each_agent_alone(recurrent, encoder):
    env, params = _env()
    trainer = _trainer(env, recurrent=recurrent, encoder=encoder)
    networks = jax.vmap(lambda k: trainer.init(k, params).network)(jax.random.split(jax.random.key(0), 2))
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
    expected = {"obs", "actor1", "actor2", "critic1", "critic2", "logits", "value"}
    expected |= {"conv1", "conv2", "encoder"} if encoder == "cnn" else set()
    expected |= {"embed", "gru"} if recurrent else set()
    assert set(batch.layers) == expected
