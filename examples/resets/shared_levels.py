"""How often optimistic resets start two environments on one level: one agent trained at each of
the two sweep files' first points with PPO's default reset_share, and at every update, the rollout's
episode ends counted per step; ends beyond the levels drawn that step start on a shared level.

    python examples/resets/shared_levels.py     # about 3 minutes on 2 CPU cores
"""

import jax
import numpy as np

import gridsim
from agents import ppo

CASES = {  # env: (options, ppo settings, the swept param at the sweep's first point)
    "coin-at-end": (dict(height=5, width=7, observation="egocentric", view_radius=3),
                    dict(total_timesteps=150_000, lr=1e-3, ent_coef=0.03, hidden=32), {"alpha": 0.0}),
    "cheese-in-corner": (dict(height=7, width=7), dict(total_timesteps=1_500_000, lr=1e-3, ent_coef=0.02),
                         {"corner_size": 1}),
}

for name, (options, settings, point) in CASES.items():
    env, params = gridsim.make(name, **options)
    trainer = ppo.make_train(ppo.Config(**settings), env)
    rollout, update = jax.jit(trainer._rollout), jax.jit(lambda s, t=trainer: t.segment(s, 1)[0])
    state = jax.jit(trainer.init)(jax.random.key(0), params.replace(**point))
    shared, ends = [], []
    for _ in range(trainer.config.num_updates):
        per_step = np.asarray(rollout(state)[1].done).sum(axis=1)
        shared.append(np.maximum(per_step - trainer.resets, 0).sum())
        ends.append(per_step.sum())
        state = update(state)
    shared, ends, tenth = np.array(shared), np.array(ends), len(ends) // 10
    share = lambda part, shared=shared, ends=ends: f"{shared[part].sum() / ends[part].sum():.2%}"
    print(f"{name}: {trainer.resets} new levels a step for {trainer.config.num_envs} environments; "
          f"{ends.sum() / (len(ends) * trainer.config.num_steps):.1f} episodes end a step; new episodes on a "
          f"shared level: {share(slice(None))} (first tenth of training {share(slice(None, tenth))}, "
          f"last tenth {share(slice(-tenth, None))})")
