"""Pictures for people: RGB frames, train-vs-test level sheets, episode GIFs."""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np

from gridsim.core import EnvParams, EnvState, GridEnv, Level
from gridsim.policy import Policy, obs_policy
from gridsim.rollout import evaluate

FLOOR = (236, 236, 230)
COLOURS = {
    "wall": (60, 60, 70),
    "agent": (40, 110, 230),
    "coin": (245, 190, 20),
    "cheese": (250, 220, 60),
    "key": (230, 120, 20),
    "chest": (140, 80, 30),
    "inventory": (230, 120, 20),
    "goal": (60, 170, 80),
    "lava": (235, 90, 30),
    "red": (215, 55, 50),
    "blue": (110, 70, 200),
    "shortcut": (200, 60, 160),
    "supervisor": (150, 40, 40),
    "apple": (200, 30, 60),
    "shield": (80, 150, 210),
    "monster": (90, 40, 120),
    "leader": (240, 140, 180),
    "beacon": (60, 170, 80),
    "tree": (34, 120, 50),
}
# channels drawn as a dark mark inside the cell instead of filling it, so that a shape shows on its colour
GLYPHS = {"square": "square", "circle": "disc", "dish": "square"}
GLYPH_COLOUR = (35, 35, 40)
_SPARE = [(200, 60, 160), (40, 170, 120), (170, 40, 40), (120, 120, 220), (100, 160, 40)]


def channel_colours(env: GridEnv) -> list[tuple[int, int, int]]:
    spare = iter(_SPARE * 4)
    return [COLOURS.get(name) or next(spare) for name in env.channel_names]


def rgb(env: GridEnv, level: Level | EnvState, cell: int = 16) -> np.ndarray:
    """``uint8[H * cell, W * cell, 3]`` picture of the whole grid (agent drawn as a disc)."""
    if isinstance(level, EnvState):
        level = level.level
    planes = np.asarray(env.full_view(level))
    colours = channel_colours(env)
    image = np.empty(planes.shape[:2] + (3,), dtype=np.uint8)
    image[:] = FLOOR
    agent_channel = env.channel_names.index("agent")
    for c, (name, colour) in enumerate(zip(env.channel_names, colours)):
        if c != agent_channel and name not in GLYPHS:
            image[planes[..., c]] = colour
    image = np.repeat(np.repeat(image, cell, axis=0), cell, axis=1)
    image[cell - 1 :: cell, :] = (image[cell - 1 :: cell, :] * 0.85).astype(np.uint8)  # faint grid lines
    image[:, cell - 1 :: cell] = (image[:, cell - 1 :: cell] * 0.85).astype(np.uint8)
    yy, xx = np.mgrid[:cell, :cell]
    centre = (cell - 1) / 2
    marks = {"disc": (yy - centre) ** 2 + (xx - centre) ** 2 <= (cell * 0.3) ** 2,
             "square": (abs(yy - centre) <= cell * 0.25) & (abs(xx - centre) <= cell * 0.25)}
    for c, name in enumerate(env.channel_names):
        if name in GLYPHS:
            for r, col in zip(*np.nonzero(planes[..., c])):
                image[r * cell : (r + 1) * cell, col * cell : (col + 1) * cell][marks[GLYPHS[name]]] = GLYPH_COLOUR
    # agent as a disc, so an object under it stays visible at the rim
    disc = (yy - centre) ** 2 + (xx - centre) ** 2 <= (cell * 0.36) ** 2
    for r, c in zip(*np.nonzero(planes[..., agent_channel])):
        image[r * cell : (r + 1) * cell, c * cell : (c + 1) * cell][disc] = colours[agent_channel]
    return image


def legend_entries(env: GridEnv) -> list[tuple[str, str, tuple[int, int, int]]]:
    """What a picture of ``env`` draws, in channel order: ``(label, how, colour)`` per channel, ``how``
    being ``"fill"`` (the cell), ``"disc"`` or ``"square"`` (a mark inside it)."""
    entries = []
    for name, colour in zip(env.channel_names, channel_colours(env)):
        unseen = " (unseen by the agent)" if name in env.unseen_kinds else ""
        if name == "agent":
            entries.append(("agent", "disc", colour))
        elif name in GLYPHS:
            entries.append((f"{name} (mark){unseen}", GLYPHS[name], GLYPH_COLOUR))
        elif name == "inventory":
            entries.append(("inventory (top row)", "fill", colour))
        else:
            entries.append((name + unseen, "fill", colour))
    return entries


def _legend(fig, env: GridEnv, centre: float) -> None:
    """One row of swatches under the sheet, centred at height ``centre`` (a fraction of the figure),
    naming each kind drawn and its colour."""
    from matplotlib.lines import Line2D

    marker = {"fill": "s", "disc": "o", "square": "s"}
    size = {"fill": 9, "disc": 8, "square": 5}
    handles = [Line2D([], [], linestyle="", marker=marker[how], markersize=size[how],
                      markerfacecolor=np.array(colour) / 255,
                      markeredgecolor=(0.45, 0.45, 0.45) if how == "fill" else np.array(colour) / 255,
                      label=label)
               for label, how, colour in legend_entries(env)]
    fig.legend(handles=handles, loc="center", bbox_to_anchor=(0.5, centre), ncol=len(handles),
               fontsize=8, frameon=False, handletextpad=0.3, columnspacing=1.2)


def sample_levels(env: GridEnv, params: EnvParams, key: jax.Array, n: int) -> Level:
    """A batch of ``n`` levels from ``params``' distribution (via ``reset``)."""
    _, states = jax.jit(jax.vmap(env.reset, (0, None)))(jax.random.split(key, n), params)
    return states.level


def level_sheet(env: GridEnv, train: EnvParams, test: EnvParams, key: jax.Array, path, n: int = 8) -> Path:
    """PNG: ``n`` sampled training levels above ``n`` test levels, distinguishing ones marked, and a
    legend of the kinds drawn and their colours."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gridsim import oracles

    k_train, k_test = jax.random.split(key)
    rows = [("train", train, sample_levels(env, train, k_train, n)),
            ("test", test, sample_levels(env, test, k_test, n))]
    legend_height = 0.35  # inches: one row of swatches under the levels
    height = 1.6 * 2 * env.height / env.width + 0.9 + legend_height
    fig, axes = plt.subplots(2, n, figsize=(1.6 * n, height), squeeze=False)
    for r, (label, params, levels) in enumerate(rows):
        distinguishing, _ = jax.jit(oracles.label, static_argnums=0)(env, params, levels)
        for i in range(n):
            level = jax.tree_util.tree_map(lambda x, i=i: x[i], levels)
            ax = axes[r, i]
            ax.imshow(rgb(env, level))
            ax.set_xticks([]), ax.set_yticks([])
            if bool(distinguishing[i]):
                ax.set_title("distinguishing", fontsize=7, color="crimson")
            if i == 0:
                ax.set_ylabel(label, fontsize=10)
    alpha = float(np.asarray(train.alpha))
    proxies = ", ".join(env.proxies) or "none"
    fig.suptitle(f"{env.name}: train (alpha={alpha:g}) vs test    true goal: {env.true_goal}, proxies: {proxies}",
                 fontsize=9)
    fig.tight_layout(rect=(0, legend_height / height, 1, 1))
    _legend(fig, env, centre=0.6 * legend_height / height)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def episode_frames(env: GridEnv, params: EnvParams, policy, key: jax.Array, cell: int = 16):
    """Frames of one episode under ``policy`` (a ``Policy``, or ``fn(key, obs) -> action``), and the
    ``info`` of its last step."""
    policy = policy if isinstance(policy, Policy) else obs_policy(policy)
    max_steps = int(np.asarray(params.max_steps_in_episode))
    play = jax.jit(lambda p, k: evaluate(env, p, policy, k, 1, max_steps, label=False, trace=True))
    result, trace = jax.device_get(play(params, key))
    steps = int(np.asarray(trace.first_episode[:, 0]).sum())
    at = lambda tree, t: jax.tree_util.tree_map(lambda x: x[t, 0], tree)
    frames = [rgb(env, at(trace.state, t), cell) for t in range(steps)]
    info = at(trace.info, steps - 1)
    frames.append(rgb(env, info["final_state"], cell))  # where the episode ended, before any reset
    return frames, info


def episode_gif(env: GridEnv, params: EnvParams, policy, key: jax.Array, path, cell: int = 16, fps: int = 6):
    """Write a GIF of one episode driven by ``policy``; returns the last step's ``info``."""
    from PIL import Image

    frames, info = episode_frames(env, params, policy, key, cell)
    images = [Image.fromarray(f) for f in frames]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    images[0].save(path, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
    return info
