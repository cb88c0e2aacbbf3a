"""One trained agent up close: where it goes on test levels (a visitation heatmap) and a GIF of its episodes.

Agents come from a sweep directory (``_agents/point-NNNN.msgpack``); the
environment and PPO config are rebuilt from the spec stored in its manifest.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np

from agents import ppo
from experiments import memory
from experiments import spec as sweep_spec
from experiments.report import point_label
from experiments.runner import batch_params, env_point, runner_for, seed_keys
from experiments.store import MANIFEST, Store
from experiments.train import level_seed
from gridsim.oracles import telling


class Episodes(NamedTuple):
    """Greedy test episodes of one agent, one per parallel environment (its first episode only)."""

    levels: object  # Level with leaves [T + 1, episodes, ...]: the level as drawn at each step
    active: np.ndarray  # [T + 1, episodes]: the step belongs to the first episode
    actions: np.ndarray  # [T, episodes]: the move taken from each step's level
    outcome: np.ndarray  # [episodes]
    distinguishing: np.ndarray  # [episodes]


def play(trainer, network, params, key, episodes: int, max_steps: int) -> Episodes:
    """Run ``episodes`` greedy episodes and keep every step's level (for pictures, not for training)."""
    result, trace = jax.device_get(_compiled_trace(trainer, episodes, max_steps)(network, params, key))
    # the level each step started from, then after each step the level where it left the agent
    after = trace.info["final_state"].level
    levels = jax.tree_util.tree_map(lambda b, a: np.concatenate([b[:1], a]), trace.state.level, after)
    active = np.concatenate([np.ones((1, episodes), bool), trace.first_episode])
    return Episodes(levels, active, np.asarray(trace.action), np.asarray(result.outcome),
                    np.asarray(result.distinguishing))


@functools.lru_cache(maxsize=8)
def _compiled_trace(trainer, episodes: int, max_steps: int):
    return jax.jit(functools.partial(ppo.evaluate, trainer, episodes=episodes, max_steps=max_steps, greedy=True,
                                     trace=True))


def visitation(env, episodes: Episodes, distinguishing_only: bool = True) -> np.ndarray:
    """``[H, W]`` fraction of steps spent in each cell, over the (distinguishing) episodes; over all
    of them where the environment declares no proxy (no level is distinguishing then)."""
    keep = episodes.active & (telling(env, episodes.distinguishing) if distinguishing_only else True)
    rows, cols = episodes.levels.agent[..., 0][keep], episodes.levels.agent[..., 1][keep]
    counts = np.zeros((env.height, env.width))
    np.add.at(counts, (rows, cols), 1)
    return counts / max(counts.sum(), 1)


class Agent(NamedTuple):
    env: object
    trainer: object
    network: object
    train_params: object
    test_params: object
    label: str


def load_agent(directory, point: int, seed: int) -> Agent:
    """Agent ``seed`` of sweep point ``point`` of the sweep in ``directory``."""
    store = Store(directory)
    spec = sweep_spec.from_manifest(store.manifest(), Path(directory) / MANIFEST)
    points = spec.points
    if not 0 <= point < len(points):
        raise ValueError(f"point {point} is not in this sweep (its points are 0 to {len(points) - 1})")
    if not 0 <= seed < spec.seeds:
        raise ValueError(f"seed {seed} is not in this sweep (its seeds are 0 to {spec.seeds - 1})")
    runner, params = runner_for(spec)
    network = jax.tree_util.tree_map(lambda x: x[seed], store.load_agents(point))
    own = batch_params(params, [env_point(params, points[point])])
    train_params = jax.tree_util.tree_map(lambda x: x[0], own)
    train_params = train_params.replace(level_seed=level_seed(seed_keys(spec)[seed]))  # its own training levels
    return Agent(runner.env, runner.trainer, network, train_params, train_params.test(),
                 f"{point_label(points[point], point)}, seed {seed}")


def agent_episodes(agent: Agent, episodes: int, seed: int = 0) -> Episodes:
    check_traced_episodes(agent.env, agent.test_params, episodes)
    max_steps = int(np.asarray(agent.test_params.max_steps_in_episode))
    return play(agent.trainer, agent.network, agent.test_params, jax.random.key(seed), episodes, max_steps)


def draw_heatmap(ax, env, episodes: Episodes, title: str) -> None:
    heat = visitation(env, episodes)
    walls = np.asarray(episodes.levels.walls[0]).all(axis=0)  # walls of every level: mazes leave the border
    image = ax.imshow(np.ma.masked_where(walls, heat), cmap="YlOrRd", vmin=0, vmax=max(heat.max(), 1e-9))
    ax.imshow(np.where(walls[..., None], np.array([[[0.25, 0.25, 0.3, 1.0]]]), 0.0))
    counts = np.bincount(episodes.outcome[telling(env, episodes.distinguishing)], minlength=len(env.outcome_names))
    shares = ", ".join(f"{n} {c / max(counts.sum(), 1):.0%}" for n, c in zip(env.outcome_names, counts) if c)
    ax.set_title(f"{title}\n{shares}", fontsize=7)
    ax.set_xticks([]), ax.set_yticks([])
    return image


def heatmap_figure(agent: Agent, episodes: Episodes, path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 4 * agent.env.height / agent.env.width + 0.6))
    image = draw_heatmap(ax, agent.env, episodes, f"{agent.env.name}: {agent.label}")
    fig.colorbar(image, ax=ax, fraction=0.046, label="share of steps (distinguishing test levels)")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130, bbox_inches="tight")
    plt.close(fig)
    return path


def episodes_gif(agent: Agent, episodes: Episodes, path, count: int = 4, cell: int = 24, fps: int = 5) -> Path:
    """GIF of the first ``count`` distinguishing episodes side by side, each frozen once it ends."""
    from PIL import Image

    from gridsim.render import rgb

    chosen = np.flatnonzero(telling(agent.env, episodes.distinguishing))[:count]
    if chosen.size == 0:
        chosen = np.arange(min(count, len(episodes.distinguishing)))
    lengths = episodes.active[:, chosen].sum(axis=0)
    frames = []
    for t in range(int(lengths.max())):
        tiles = []
        for e, length in zip(chosen, lengths):
            last = min(t, length - 1)  # an ended episode stays on its last frame
            level = jax.tree_util.tree_map(lambda x, last=last, e=e: x[last, e], episodes.levels)
            tile = rgb(agent.env, level, cell)
            tiles.append(np.pad(tile, ((0, 0), (0, cell // 3), (0, 0)), constant_values=255))
        frames.append(Image.fromarray(np.concatenate(tiles, axis=1)))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=int(1000 / fps), loop=0)
    return path


def check_episodes(episodes: int) -> None:
    """Refuse a run of no test episodes before anything is played or written."""
    if episodes < 1:
        raise ValueError(f"--episodes must be >= 1, got {episodes}")


def check_traced_episodes(env, params, episodes: int, agents: int = 1) -> None:
    """Refuse, before compiling, traced episodes (every step kept) that cannot fit the device."""
    max_steps = int(np.asarray(params.max_steps_in_episode))
    needed = agents * memory.evaluation_bytes(env, params, episodes, max_steps, trace=True)
    memory.refuse_beyond_device(needed, "--episodes", f"tracing {episodes:,} test episodes of {max_steps:,} steps "
                                f"for each of {agents:,} agent(s)")


def inspect(directory, point: int, seed: int, episodes: int = 256, out_dir=None) -> list[Path]:
    check_episodes(episodes)
    agent = load_agent(directory, point, seed)
    played = agent_episodes(agent, episodes)
    out_dir = Store(directory).figures(out_dir)
    stem = f"agent-p{point:04d}-s{seed:04d}"
    return [heatmap_figure(agent, played, out_dir / f"{stem}-visits.png"),
            episodes_gif(agent, played, out_dir / f"{stem}.gif")]
