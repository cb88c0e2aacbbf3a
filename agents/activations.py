"""What an agent's network computes inside: every layer's activations on played episodes, and the
same network with a vector added at one layer (steering).

A layer is the output of a flax module of the network that has parameters (flax's own
``capture_intermediates``), plus ``obs``, the flattened observation the network reads. gridsim's
networks name theirs by role (``agents.networks.LAYERS``: ``conv1``, ``embed``, ``gru``, ``actor1``, ...); another
flax network's layers keep their module paths (``Dense_0``, ``Block_1/Dense_0``). Steering adds a
vector to one layer's output through flax's ``intercept_methods``, so it needs no change to the
network either.
"""

from __future__ import annotations

import contextlib
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

import gridsim
from agents.networks import LAYERS, ActorCritic, RecurrentActorCritic
from gridsim.policy import Policy
from gridsim.rollout import Evaluation

OBS = "obs"  # the pseudo-layer every network has: the observation, flattened

def _ours(module: nn.Module) -> bool:
    return isinstance(module, ActorCritic | RecurrentActorCritic)


def _path_name(path: tuple[str, ...], ours: bool) -> str:
    joined = "/".join(path)
    return LAYERS.get(joined, joined) if ours else joined


def _parameterised(variables, path: tuple[str, ...]) -> bool:
    tree = variables.get("params", {})
    for part in path:
        if not isinstance(tree, dict) or part not in tree:
            return False
        tree = tree[part]
    return True


def _layers_of(captured, variables, batch_ndim: int, ours: bool) -> dict[str, jax.Array]:
    """Flatten flax's intermediates tree to ``{name: [..., features]}``: in gridsim's networks the
    layers of ``LAYERS``; in another network every module with parameters that returns one array."""
    outputs = {}

    def walk(tree, path):
        for key, value in tree.items():
            if key == "__call__":
                outputs[path] = value[0]
            else:
                walk(value, path + (key,))

    walk(captured, ())
    found = {}
    for path, out in outputs.items():
        if not path or not _parameterised(variables, path) or (ours and "/".join(path) not in LAYERS):
            continue
        if ours and "/".join(path) == "GRUCell_0":
            out = out[0]  # the cell returns (new hidden, output): the same array twice
        elif not isinstance(out, jax.Array):
            continue
        found[_path_name(path, ours)] = out.reshape(out.shape[:batch_ndim] + (-1,))
    return found


def ordered(names) -> list[str]:
    """Layer names in the order the network computes them (``OBS`` first; jax sorts a dict's keys)."""
    order = [OBS] + list(LAYERS.values())
    return sorted(names, key=lambda name: (order.index(name) if name in order else len(order), name))


def _steering_interceptor(steer: dict[str, jax.Array], ours: bool):
    """Add ``steer[name]`` (flattened like the layer) to the output of the layer called ``name``."""
    def interceptor(call, args, kwargs, context):
        output = call(*args, **kwargs)
        name = _path_name(tuple(context.module.path), ours)
        if context.method_name != "__call__" or name not in steer:
            return output
        # outputs are [batch, ...features]; a GRU cell's is (hidden, output), one array twice
        return jax.tree_util.tree_map(lambda x: x + steer[name].reshape(x.shape[1:]), output)

    return interceptor


def apply(module: nn.Module, variables, hidden, obs, reset, steer: dict[str, jax.Array] | None = None,
          capture: bool = False):
    """``module.apply(variables, hidden, obs, reset)`` (a batch), with ``steer`` (``{layer: vector}``,
    the vector flattened like the layer) added to those layers' outputs; with ``capture``, also
    ``{layer: [batch, features]}`` of every layer (``OBS`` first)."""
    if steer and OBS in steer:
        raise ValueError(f"{OBS!r} is the observation, not a layer of the network: it cannot be steered")
    context = nn.intercept_methods(_steering_interceptor(steer, _ours(module))) if steer else contextlib.nullcontext()
    with context:
        if not capture:
            return module.apply(variables, hidden, obs, reset)
        out, state = module.apply(variables, hidden, obs, reset, capture_intermediates=True, mutable=["intermediates"])
    layers = {OBS: obs.reshape(obs.shape[:1] + (-1,)).astype(jnp.float32)}
    layers.update(_layers_of(state["intermediates"], variables, batch_ndim=1, ours=_ours(module)))
    return out, layers


def layer_sizes(trainer, params) -> dict[str, int]:
    """``{layer: features}`` of ``trainer``'s network on ``params``' observations, in capture order."""
    def shapes(key):
        obs, _ = trainer.env.reset(key, params)
        network = trainer.network.init(key, trainer.initial_hidden(1), obs[None], jnp.ones(1, bool))
        return apply(trainer.network, network, trainer.initial_hidden(1), obs[None], jnp.ones(1, bool), capture=True)[1]

    sizes = jax.eval_shape(shapes, jax.random.key(0))
    return {name: sizes[name].shape[-1] for name in ordered(sizes)}


class Capture(NamedTuple):
    """Played episodes and every layer's activations along them; step leaves are ``[max_steps, episodes, ...]``."""

    evaluation: Evaluation  # per episode (outcome, the oracles' labels, ...)
    level: object  # the level each step started from (``Level`` with ``[max_steps, episodes]`` leaves)
    active: jax.Array  # bool[max_steps, episodes]: the step belongs to its episode's first episode
    action: jax.Array  # the move taken
    logits: jax.Array  # [max_steps, episodes, actions]: the policy's output there
    layers: dict  # {layer: [max_steps, episodes, features]}


def capture(trainer, network, params, key, episodes: int, max_steps: int, levels=None, greedy: bool = True) -> Capture:
    """Play ``episodes`` (``gridsim.evaluate``, on ``levels`` when given) and replay the network along
    them, keeping every layer. Pure and jittable; vmap it over ``network`` for many agents. Memory is
    ``max_steps * episodes`` times the layers' features: it grows with what is captured, not with training."""
    env = trainer.env
    policy = trainer.policy(network, greedy)
    evaluation, trace = gridsim.evaluate(env, params, policy, key, episodes, max_steps, trace=True, levels=levels)
    obs = jax.vmap(jax.vmap(env.observe))(trace.state.level)

    def step(hidden, inputs):
        obs_t, first = inputs
        (hidden, logits, _), layers = apply(trainer.network, network, hidden, obs_t, jnp.full(episodes, first),
                                            capture=True)
        return hidden, (logits, layers)

    firsts = jnp.arange(max_steps) == 0  # evaluation plays one episode per environment: only step 0 starts one
    _, (logits, layers) = jax.lax.scan(step, trainer.initial_hidden(episodes), (obs, firsts))
    return Capture(evaluation, trace.state.level, trace.first_episode, trace.action, logits, layers)


def steered_policy(trainer, network, steer: dict[str, jax.Array], greedy: bool = True) -> Policy:
    """The trained agent with ``steer`` (``{layer: vector}``) added at those layers on every step."""
    def act(key, obs, state, params, hidden, first):
        hidden, logits, _ = apply(trainer.network, network, hidden[None], obs[None], first[None], steer=steer)
        action = jnp.argmax(logits, axis=-1) if greedy else jax.random.categorical(key, logits)
        return action[0], hidden[0]

    return Policy(act=act, carry=jnp.zeros(trainer.hidden_size, jnp.float32))


class GoalVector(NamedTuple):
    """A steering vector from training levels: a layer's mean activation on levels where the true goal
    lies apart from every proxy's target minus that on levels where it lies on one."""

    vector: jax.Array  # [features], flattened like the layer
    apart: jax.Array  # steps averaged on each side
    together: jax.Array


def goal_apart(env, params, level) -> jax.Array:
    """``bool``: none of the true goal's target cells is a target cell of a proxy (the engine's
    ``goal_targets``, as the oracles read them), on one level."""
    from gridsim import oracles

    reached = oracles.target_costs(env, level, params) == 0  # [goals, H, W]
    return ~jnp.any(reached[0] & jnp.any(reached[1:], axis=0))


def goal_vector(trainer, network, params, key, layer: str, episodes: int, max_steps: int,
                chunk: int = 256) -> GoalVector:
    """The ``layer``'s goal vector over ``episodes`` levels drawn from ``params`` (the agent's training
    levels; ``episodes`` rounds down to a multiple of ``chunk``), played ``chunk`` at a time so memory
    holds one chunk's capture. NaN where either side has no step. Pure and jittable."""
    def one_chunk(key):
        captured = capture(trainer, network, params, key, chunk, max_steps)
        start = jax.tree_util.tree_map(lambda x: x[0], captured.level)
        apart = jax.vmap(goal_apart, (None, None, 0))(trainer.env, params, start)
        sides = jnp.stack([apart, ~apart])  # [2, chunk]
        steps = (captured.active[None] & sides[:, None]).astype(jnp.float32)  # [2, steps, chunk]
        return jnp.einsum("stc,tcf->sf", steps, captured.layers[layer]), jnp.sum(steps, axis=(1, 2))

    sums, counts = jax.lax.map(one_chunk, jax.random.split(key, max(1, episodes // chunk)))
    sums, counts = jnp.sum(sums, axis=0), jnp.sum(counts, axis=0)
    means = sums / jnp.maximum(counts, 1)[:, None]
    vector = jnp.where(jnp.all(counts > 0), means[0] - means[1], jnp.nan)
    return GoalVector(vector, counts[0], counts[1])
