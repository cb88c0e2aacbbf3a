"""PPO in pure JAX, in the style of PureJaxRL: one file, one compiled program.

``make_train(config, env)`` returns a ``Trainer`` whose ``__call__(key,
params)`` is pure, so ``jax.vmap`` over keys (seeds) and over env params
(shift settings) turns a whole sweep into one program. Training also runs in
segments, ``trainer.segment(state, n_updates)``, so a caller can show
progress, checkpoint and resume; a segment keeps per-update summaries only,
never per-step data, so memory grows with seeds, not with training length.

It knows environments only through the gymnax-style interface:
``reset``, ``step`` (auto-resetting), ``num_actions``, and ``info`` with
``truncated`` and ``final_observation`` on every step (a truncated episode is
bootstrapped from the value of where it was cut) and ``outcome`` /
``episode_return`` / ``episode_length`` at episode ends.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import struct

import gridsim
from agents import curriculum as curricula
from agents.networks import ActorCritic, RecurrentActorCritic

# sizes past which a run would not fit memory or finish: refused before anything compiles
LIMITS = {"num_envs": 1 << 16, "num_steps": 1 << 16, "total_timesteps": 1 << 40, "update_epochs": 1024,
          "num_minibatches": 1 << 16, "hidden": 8192}


@dataclasses.dataclass(frozen=True)
class Config:
    """PPO settings. Defaults solve the small gridsim environments in a few 100k steps."""

    num_envs: int = 64  # parallel environments per seed
    num_steps: int = 32  # rollout length per update
    total_timesteps: int = 500_000  # env steps per seed
    update_epochs: int = 4
    num_minibatches: int = 4
    lr: float = 5e-4
    anneal_lr: bool = True  # linear decay to 0 over training
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_eps: float = 0.2  # policy and value clipping
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    encoder: str = "mlp"  # "mlp" or "cnn"
    hidden: int = 64
    recurrent: bool = False  # a GRU between encoder and heads; minibatches then split environments
    # new levels drawn per rollout step, as a share of num_envs (at least one), handed in turn to the
    # environments whose episode ended (optimistic resets, ``GridEnv.step_batch``); 1.0: one level drawn
    # for each environment at every step (exact resets, also used for environments without step_batch).
    # Domain randomization only: a curriculum chooses every level itself.
    reset_share: float = 0.25

    @property
    def batch_size(self) -> int:
        return self.num_envs * self.num_steps

    @property
    def levels_per_step(self) -> int:
        """New levels drawn per rollout step under ``reset_share`` (``num_envs``: exact resets)."""
        return min(self.num_envs, max(1, round(self.num_envs * self.reset_share)))

    @property
    def num_updates(self) -> int:
        return self.total_timesteps // self.batch_size

    @property
    def steps_per_seed(self) -> int:
        """Env steps one seed trains for (``total_timesteps`` rounded down to whole updates)."""
        return self.num_updates * self.batch_size

    def validate(self) -> Config:
        """Raise ``ValueError`` naming the setting, before anything compiles."""
        for name in ("num_envs", "num_steps", "total_timesteps", "update_epochs", "num_minibatches", "hidden"):
            if getattr(self, name) < 1:
                raise ValueError(f"ppo.Config.{name} must be >= 1, got {getattr(self, name)}")
        if self.batch_size % self.num_minibatches:
            raise ValueError(
                f"ppo.Config.num_minibatches ({self.num_minibatches}) must divide num_envs * num_steps "
                f"({self.batch_size})"
            )
        if self.num_updates < 1:
            raise ValueError(
                f"ppo.Config.total_timesteps ({self.total_timesteps}) is less than one update "
                f"(num_envs * num_steps = {self.batch_size})"
            )
        if self.recurrent and self.num_envs % self.num_minibatches:
            raise ValueError(
                f"ppo.Config.num_minibatches ({self.num_minibatches}) must divide num_envs ({self.num_envs}) "
                "for a recurrent policy (minibatches are groups of whole environment sequences)"
            )
        if not 0 < self.reset_share <= 1:
            raise ValueError(f"ppo.Config.reset_share is a share of num_envs in (0, 1] (1: a level per environment "
                             f"at every step), got {self.reset_share}")
        if self.encoder not in ("mlp", "cnn"):
            raise ValueError(f"ppo.Config.encoder must be 'mlp' or 'cnn', got {self.encoder!r}")
        for name in ("lr", "gamma", "gae_lambda", "clip_eps", "max_grad_norm", "ent_coef", "vf_coef"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"ppo.Config.{name} must be finite, got {getattr(self, name)}")
        for name in ("lr", "gamma", "gae_lambda", "clip_eps", "max_grad_norm"):
            if not getattr(self, name) > 0:
                raise ValueError(f"ppo.Config.{name} must be > 0, got {getattr(self, name)}")
        for name in ("gamma", "gae_lambda"):
            if getattr(self, name) > 1:
                raise ValueError(f"ppo.Config.{name} is a discount, at most 1, got {getattr(self, name)}")
        for name in ("ent_coef", "vf_coef"):
            if getattr(self, name) < 0:
                raise ValueError(f"ppo.Config.{name} must be >= 0, got {getattr(self, name)}")
        for name, limit in LIMITS.items():
            if getattr(self, name) > limit:
                raise ValueError(f"ppo.Config.{name} must be at most {limit:,}, got {getattr(self, name):,}")
        return self


@struct.dataclass
class TrainState:
    """Everything one seed's training carries between segments (a pytree: checkpoint it as is)."""

    network: Any  # flax params
    opt_state: Any
    env_state: Any
    obs: jax.Array
    hidden: jax.Array  # [num_envs, hidden] recurrent state ([num_envs, 0] for feed-forward policies)
    reset: jax.Array  # [num_envs] obs is the first of an episode
    key: jax.Array
    env_params: Any
    update: jax.Array  # updates done so far
    diverged: jax.Array  # a loss or gradient went non-finite; updates since were skipped
    curriculum: Any = ()  # the level buffer (``agents.curriculum.State``); () for domain randomization


class Metrics(NamedTuple):
    """Per-update summaries: the only thing training keeps over time."""

    episodes: jax.Array  # episodes that ended during the rollout
    success_rate: jax.Array  # of those, the fraction that succeeded (``GridEnv.succeeded``)
    episode_return: jax.Array  # mean return of those episodes
    episode_length: jax.Array
    reward_per_step: jax.Array  # mean reward of the rollout's steps: the learning curve of a reset-free world
    event_rate: jax.Array  # [events]: the fraction of the rollout's steps that fired each of ``env.event_names``
    loss: jax.Array
    entropy: jax.Array
    diverged: jax.Array
    trained: jax.Array  # the update took gradients (a curriculum's new and edited levels are only scored)
    buffer_score: jax.Array  # mean score of the curriculum's buffered levels (NaN without a curriculum)


class TrainOutput(NamedTuple):
    state: TrainState
    metrics: Metrics  # each field [num_updates]


class Transition(NamedTuple):
    obs: jax.Array
    reset: jax.Array  # obs starts an episode: the recurrent state was zeroed before reading it
    action: jax.Array
    log_prob: jax.Array
    value: jax.Array
    reward: jax.Array
    done: jax.Array
    truncated: jax.Array
    final_value: jax.Array  # value of the observation right after the step (before any auto-reset)


def _permutation(key, n: int):
    """A random permutation of ``arange(n)`` made as ``jax.random.permutation`` makes it, by two
    rounds of sorting on random keys, but each element rides in the low bits of its own key, so
    a round sorts one uint32 array: XLA:CPU does that ~4x faster than sorting key-value pairs,
    and the shuffle was ~9% of training time. Not the same permutation as jax's for a key. Keys
    whose random bits tie keep their order in that round (~1 pair per round at n = 2048)."""
    bits = max(1, (n - 1).bit_length())
    if bits > 12:  # fewer than 20 random bits would leave many ties: use jax's key-value sort
        return jax.random.permutation(key, n)
    low = jnp.uint32((1 << bits) - 1)
    x = jnp.arange(n, dtype=jnp.uint32)
    for k in jax.random.split(key, 2):
        x = jnp.sort((jax.random.bits(k, (n,), jnp.uint32) & ~low) | x) & low
    return x.astype(jnp.int32)


def _log_prob(logits, action):
    return jnp.take_along_axis(jax.nn.log_softmax(logits), action[..., None], axis=-1)[..., 0]


def _entropy(logits):
    log_p = jax.nn.log_softmax(logits)
    return -jnp.sum(jnp.exp(log_p) * log_p, axis=-1)


class Trainer:
    def __init__(self, config: Config, env, curriculum: curricula.Config | None = None):
        self.config = config.validate()
        self.curriculum = (curriculum or curricula.Config()).validate(config.num_envs, env)
        # optimistic resets: levels drawn a step, or 0 for exact resets (which environments without a batched
        # step, a gridsim GridEnv's, always use) and under a curriculum (which chooses every level itself)
        optimistic = hasattr(env, "step_batch") and config.levels_per_step < config.num_envs
        self.resets = config.levels_per_step if optimistic and not self.curriculum.active else 0
        self.env = env
        network = RecurrentActorCritic if config.recurrent else ActorCritic
        self.network = network(env.num_actions, config.hidden, config.encoder)
        self.hidden_size = config.hidden if config.recurrent else 0
        schedule = (
            optax.linear_schedule(config.lr, 0.0, config.num_updates * config.update_epochs * config.num_minibatches)
            if config.anneal_lr
            else config.lr
        )
        self.optimizer = optax.chain(optax.clip_by_global_norm(config.max_grad_norm), optax.adam(schedule, eps=1e-5))

    # ---- public -----------------------------------------------------------------

    def init(self, key, env_params, curriculum: curricula.Params | None = None) -> TrainState:
        """A seed's state before training; ``curriculum`` holds the traced curriculum settings (default:
        the trainer's)."""
        c = self.config
        k_net, k_env, key = jax.random.split(key, 3)
        obs, env_state = jax.vmap(self.env.reset, (0, None))(jax.random.split(k_env, c.num_envs), env_params)
        hidden, reset = self.initial_hidden(c.num_envs), jnp.ones(c.num_envs, bool)
        network = self.network.init(k_net, hidden, obs, reset)
        return TrainState(
            network=network,
            opt_state=self.optimizer.init(network),
            env_state=env_state,
            obs=obs,
            hidden=hidden,
            reset=reset,
            key=key,
            env_params=env_params,
            update=jnp.int32(0),
            diverged=jnp.bool_(False),
            curriculum=curricula.init(self.curriculum, self.curriculum.params() if curriculum is None else curriculum,
                                      env_state.level)
            if self.curriculum.active else (),
        )

    def segment(self, state: TrainState, n_updates: int) -> tuple[TrainState, Metrics]:
        """Run ``n_updates`` (static) PPO updates from ``state``."""
        return jax.lax.scan(lambda s, _: self._update(s), state, None, length=n_updates)

    def __call__(self, key, env_params, curriculum: curricula.Params | None = None) -> TrainOutput:
        """Train one seed from scratch: pure, so vmap it over keys, env params and curriculum settings."""
        state, metrics = self.segment(self.init(key, env_params, curriculum), self.config.num_updates)
        return TrainOutput(state, metrics)

    def initial_hidden(self, batch: int) -> jax.Array:
        return jnp.zeros((batch, self.hidden_size), jnp.float32)

    def act(self, network, hidden, obs, reset, key, greedy: bool = False):
        """``(hidden, action)`` for a batch of observations."""
        hidden, logits, _ = self.network.apply(network, hidden, obs, reset)
        return hidden, jnp.argmax(logits, axis=-1) if greedy else jax.random.categorical(key, logits)

    def policy(self, network, greedy: bool = False):
        """The trained agent as a ``gridsim.Policy`` (for ``gridsim.evaluate``, GIFs, calibration)."""
        def act(key, obs, state, params, hidden, first):
            hidden, action = self.act(network, hidden[None], obs[None], first[None], key, greedy)
            return action[0], hidden[0]

        return gridsim.Policy(act=act, carry=jnp.zeros(self.hidden_size, jnp.float32))

    # ---- one update ---------------------------------------------------------------

    def layout_bank(self, state: TrainState):
        """The maze walls the next update's new episodes take (``GridEnv.sample_layouts``): generated
        once per update instead of once per environment per step; agent and objects are still drawn
        afresh for every episode. None for environments without procedural walls or without banks."""
        if not hasattr(self.env, "sample_layouts"):
            return None
        return self.env.sample_layouts(jax.random.fold_in(state.key, 0xBA4C), state.env_params, self.config.num_envs)

    def step_all(self, state: TrainState, levels=None):
        """``(key, env_states, actions, params) -> step`` of every environment for one rollout step: on a
        curriculum's ``levels`` (each environment replays its own), else with optimistic resets (``resets``
        new levels a step from this update's bank of walls), else one fresh level per environment."""
        c = self.config
        if levels is not None:
            return lambda key, *args: jax.vmap(self.env.step_on, (0, 0, None, 0))(*args, levels)
        bank = self.layout_bank(state)
        if self.resets:
            return functools.partial(self.env.step_batch, bank=bank, resets=self.resets)
        step = self.env.step if bank is None else functools.partial(self.env.step, bank=bank)
        return lambda key, *args: jax.vmap(step, (0, 0, 0, None))(jax.random.split(key, c.num_envs), *args)

    def _rollout(self, state: TrainState, levels=None):
        """``num_steps`` steps of every environment; with ``levels`` (a curriculum's), each environment
        replays its own level whenever an episode ends."""
        c = self.config
        step_all = self.step_all(state, levels)

        def one_step(carry, _):
            env_state, obs, hidden, reset, key = carry
            key, k_act, k_env = jax.random.split(key, 3)
            hidden, logits, value = self.network.apply(state.network, hidden, obs, reset)
            action = jax.random.categorical(k_act, logits)
            next_obs, env_state, reward, done, info = step_all(k_env, env_state, action, state.env_params)
            log_prob = _log_prob(logits, action)
            transition = Transition(obs, reset, action, log_prob, value, reward, done, info["truncated"], None)
            # where a time limit cut an episode its return goes on: bootstrap from the observation after the step
            after = (info["final_observation"], hidden)
            ended = (
                done,
                info["success"],
                info["episode_return"],
                info["episode_length"].astype(jnp.float32),
                jnp.stack([info["events"][name] for name in self.env.event_names], axis=-1),
            )
            # auto-reset: after a done, next_obs starts a new episode
            return (env_state, next_obs, hidden, done, key), (transition, after, ended)

        carry = (state.env_state, state.obs, state.hidden, state.reset, state.key)
        carry, (transitions, (final_obs, hidden), ended) = jax.lax.scan(one_step, carry, None, length=c.num_steps)
        final_value = self._values_after(state.network, hidden, final_obs)
        return carry, transitions._replace(final_value=final_value), ended

    def _values_after(self, network, hidden, obs):
        """Values of the ``[num_steps, num_envs]`` observations after each rollout step (the truncation
        bootstrap), in one batch after the rollout: one large call costs far less than a small one per step."""
        c = self.config
        flat = lambda x: x.reshape((c.num_steps * c.num_envs,) + x.shape[2:])
        _, _, value = self.network.apply(network, flat(hidden), flat(obs), jnp.zeros(c.num_steps * c.num_envs, bool))
        return value.reshape(c.num_steps, c.num_envs)

    def _advantages(self, transitions: Transition, last_value):
        c = self.config

        def backward(carry, t):
            gae, next_value = carry
            # a truncated episode is cut, not ended: bootstrap from the value of where it was cut
            bootstrap = jnp.where(t.truncated, t.final_value, next_value * (1.0 - t.done))
            delta = t.reward + c.gamma * bootstrap - t.value
            gae = delta + c.gamma * c.gae_lambda * (1.0 - t.done) * gae
            return (gae, t.value), gae

        _, advantages = jax.lax.scan(
            backward, (jnp.zeros_like(last_value), last_value), transitions, reverse=True
        )
        return advantages, advantages + transitions.value

    def _replay(self, network, initial_hidden, batch: Transition):
        """Logits and values of a batch as the rollout saw them; recurrent batches are
        ``[time, envs]`` sequences replayed from their initial hidden state."""
        if not self.config.recurrent:
            _, logits, value = self.network.apply(network, initial_hidden, batch.obs, batch.reset)
            return logits, value

        def step(hidden, t):
            hidden, logits, value = self.network.apply(network, hidden, t.obs, t.reset)
            return hidden, (logits, value)

        return jax.lax.scan(step, initial_hidden, batch)[1]

    def _loss(self, network, initial_hidden, batch: Transition, advantages, targets):
        c = self.config
        logits, value = self._replay(network, initial_hidden, batch)
        log_prob = _log_prob(logits, batch.action)
        clipped_value = batch.value + jnp.clip(value - batch.value, -c.clip_eps, c.clip_eps)
        value_loss = 0.5 * jnp.maximum((value - targets) ** 2, (clipped_value - targets) ** 2).mean()
        ratio = jnp.exp(log_prob - batch.log_prob)
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
        policy_loss = -jnp.minimum(
            ratio * advantages, jnp.clip(ratio, 1.0 - c.clip_eps, 1.0 + c.clip_eps) * advantages
        ).mean()
        entropy = _entropy(logits).mean()
        return policy_loss + c.vf_coef * value_loss - c.ent_coef * entropy, entropy

    def _plan(self, state: TrainState):
        """A curriculum's levels for this update, every environment started on its own."""
        plan = curricula.plan(self.curriculum, self.env, state.curriculum, state.env_params,
                              jax.random.fold_in(state.key, 0xC0), state.update)
        c = self.config
        state = state.replace(obs=jax.vmap(self.env.observe)(plan.levels),
                              env_state=jax.vmap(self.env.start)(plan.levels),
                              hidden=self.initial_hidden(c.num_envs), reset=jnp.ones(c.num_envs, bool))
        return state, plan

    def _minibatches(self, key, transitions: Transition, advantages, targets, hidden):
        """One epoch's shuffle: ``(initial hidden, transitions, advantages, targets)``, each with a leading
        ``num_minibatches`` axis. Recurrent policies get whole environment sequences
        (``[time, envs / num_minibatches]``, replayed from the rollout's initial ``hidden``); others
        shuffled single steps."""
        c = self.config
        if c.recurrent:
            order = jax.random.permutation(key, c.num_envs)
            split = lambda x: jnp.moveaxis(x[:, order].reshape((x.shape[0], c.num_minibatches, -1) + x.shape[2:]), 1, 0)
            batches = jax.tree_util.tree_map(split, (transitions, advantages, targets))
            return (hidden[order].reshape((c.num_minibatches, -1, self.hidden_size)), *batches)
        order = _permutation(key, c.batch_size)
        batches = jax.tree_util.tree_map(
            lambda x: x.reshape((c.batch_size,) + x.shape[2:])[order].reshape((c.num_minibatches, -1) + x.shape[2:]),
            (transitions, advantages, targets),
        )
        return (jnp.zeros((c.num_minibatches, c.batch_size // c.num_minibatches, 0)), *batches)

    def _update(self, state: TrainState):
        c = self.config
        plan = None
        if self.curriculum.active:
            state, plan = self._plan(state)
        (env_state, obs, hidden, reset, key), transitions, ended = self._rollout(
            state, None if plan is None else plan.levels)
        _, _, last_value = self.network.apply(state.network, hidden, obs, reset)
        advantages, targets = self._advantages(transitions, last_value)
        train = jnp.bool_(True) if plan is None else plan.kind == curricula.REPLAY

        def epoch(carry, _):
            network, opt_state, key, bad = carry
            key, k_perm = jax.random.split(key)
            minibatches = self._minibatches(k_perm, transitions, advantages, targets, state.hidden)

            def minibatch(carry, mb):
                network, opt_state, bad = carry
                (loss, entropy), grads = jax.value_and_grad(self._loss, has_aux=True)(network, *mb)
                updates, new_opt_state = self.optimizer.update(grads, opt_state, network)
                finite = jnp.isfinite(loss) & jnp.isfinite(optax.tree.norm(grads))
                # a seed whose loss goes non-finite stops learning and is flagged; other seeds are untouched
                # a curriculum's update that only scores levels computes gradients (vmapped seeds compute
                # both kinds anyway) but keeps none
                keep = lambda new, old: jax.tree_util.tree_map(
                    lambda n, o: jnp.where(finite & ~bad & train, n, o), new, old)
                network = keep(optax.apply_updates(network, updates), network)
                opt_state = keep(new_opt_state, opt_state)
                return (network, opt_state, bad | (~finite & train)), (loss, entropy)

            (network, opt_state, bad), stats = jax.lax.scan(minibatch, (network, opt_state, bad), minibatches)
            return (network, opt_state, key, bad), stats

        (network, opt_state, key, diverged), (loss, entropy) = jax.lax.scan(
            epoch, (state.network, state.opt_state, key, state.diverged), None, length=c.update_epochs
        )
        done, success, episode_return, episode_length, events = ended
        curriculum = state.curriculum
        if plan is not None:
            rollout = {"reward": transitions.reward, "done": done, "success": success, "value": transitions.value,
                       "advantage": advantages}
            score, best = curricula.scores(self.curriculum, self.env, state.env_params, plan.levels, rollout, c.gamma)
            curriculum = curricula.record(self.curriculum, curriculum, plan, score, best,
                                          transitions.value.mean(axis=0), state.update + 1)
        episodes = done.sum()
        per_episode = lambda x: jnp.where(episodes > 0, jnp.sum(x * done) / jnp.maximum(episodes, 1), jnp.nan)
        metrics = Metrics(
            episodes=episodes,
            success_rate=per_episode(success),
            episode_return=per_episode(episode_return),
            episode_length=per_episode(episode_length),
            reward_per_step=transitions.reward.mean(),
            event_rate=events.mean(axis=(0, 1)),
            loss=loss.mean(),
            entropy=entropy.mean(),
            diverged=diverged,
            trained=train,
            buffer_score=jnp.float32(jnp.nan) if plan is None else _mean_where(curriculum.buffer.score,
                                                                             curriculum.buffer.filled),
        )
        new_state = state.replace(
            network=network,
            opt_state=opt_state,
            env_state=env_state,
            obs=obs,
            hidden=hidden,
            reset=reset,
            key=key,
            update=state.update + 1,
            diverged=diverged,
            curriculum=curriculum,
        )
        return new_state, metrics


def _mean_where(x, mask):
    return jnp.where(jnp.any(mask), jnp.sum(jnp.where(mask, x, 0.0)) / jnp.maximum(jnp.sum(mask), 1), jnp.nan)


def make_train(config: Config, env, curriculum: curricula.Config | None = None) -> Trainer:
    """``Trainer`` for ``env``; ``trainer(key, params)`` trains one seed (vmap it for many). With a
    ``curriculum`` (``agents.curriculum``: PLR or ACCEL) levels come from its buffer."""
    return Trainer(config, env, curriculum)


def evaluate(trainer: Trainer, network, env_params, key, episodes: int, max_steps: int, greedy: bool = False,
             trace: bool = False, label: bool = True, regret: bool = False):
    """``gridsim.evaluate`` with this trainer's agent: per-episode outcomes on ``episodes`` fresh
    levels, each labelled distinguishing or not by the env's oracles, and with ``regret`` each
    episode's regret under the agent's own discount. Pure and jittable (``episodes``, ``max_steps``,
    ``trace``, ``label``, ``regret`` static); vmap over ``network`` for many agents."""
    return gridsim.evaluate(trainer.env, env_params, trainer.policy(network, greedy), key, episodes, max_steps,
                            label=label, trace=trace, discount=trainer.config.gamma if regret else None)
