"""The corner-size curve beside jaxgmg's published one: for each corner size, as a share of the maze's
interior side (1 to 5 of 5 in a 7x7 maze, 1 to 11 of 11 in jaxgmg's 13x13), gridsim's true-goal and
corner rates on distinguishing test levels, with each agent, and jaxgmg's test returns for the cheese
and for the corner divided by the optimal return (0.882).

    gridsim sweep examples/cheese_corner_curve.toml
    python examples/cheese_corner_curve_figure.py runs/cheese_corner_curve

Draws ``_figures/corner_curve_published.png`` in the sweep's directory.
"""

import sys
from pathlib import Path

import numpy as np

from experiments.plots import _pyplot, save_figure
from experiments.report import load
from experiments.spec import from_manifest

# jaxgmg plots/gmg-corner-13/data (13x13 mazes, IMPALA CNN, 2,048 training levels, 20M steps), corner sizes
# 1 to 11: discounted test return for the cheese and for the corner, and the optimal return
PUBLISHED_TRUE = [.130, .190, .260, .340, .461, .517, .634, .658, .678, .675, .691]
PUBLISHED_CORNER = [.463, .013, .134, .098, .019, .040, .020, .021, .039, .019, .027]
PUBLISHED_OPTIMAL = 0.882

directory = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/cheese_corner_curve")
table, _, manifest = load(directory)
agents = table[table.capable]
interior = int(from_manifest(manifest, directory).env_options["height"]) - 2
fig, ax = _pyplot().subplots(figsize=(6, 3.8))
published_x = np.arange(1, 12) / 11
ax.plot(published_x, np.array(PUBLISHED_TRUE) / PUBLISHED_OPTIMAL, "s--", color="C1", alpha=0.6,
        label="jaxgmg 13x13: cheese return / optimal")
ax.plot(published_x, np.array(PUBLISHED_CORNER) / PUBLISHED_OPTIMAL, "s--", color="C2", alpha=0.6,
        label="jaxgmg 13x13: corner return / optimal")
for outcome, colour, name in (("test_true", "C1", "cheese"), ("test_proxy:corner", "C2", "corner")):
    rates = agents[outcome] / agents.distinguishing_episodes.clip(lower=1)
    x = agents.corner_size / interior
    ax.scatter(x, rates, s=10, color=colour, alpha=0.5)
    means = rates.groupby(x).mean()
    ax.plot(means.index, means.to_numpy(), "o-", color=colour,
            label=f"gridsim {interior + 2}x{interior + 2}: {name} first, distinguishing levels")
ax.set_xlabel("corner size / interior side")
ax.set_ylabel("gridsim: share of episodes\njaxgmg: return / optimal")
ax.set_ylim(-0.03, 1.03)
ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2)
(directory / "_figures").mkdir(exist_ok=True)
for path in save_figure(fig, directory / "_figures", "corner_curve_published"):
    print(f"wrote {path}")
