"""Which feature each agent of a colour-vs-shape sweep follows, as Ramanauskas and Simsek measure it:
per agent, the share of its distinguishing test episodes reaching an object that reach the red circle
(colour) rather than the blue square (shape), episodes reaching neither left out.

    gridsim sweep examples/colour_vs_shape.toml
    python examples/colour_vs_shape_seeds.py runs/colour_vs_shape

Prints the distribution over agents and tests whether agents differ by more than their test episodes'
sampling allows (a chi-square test of one shared preference); draws the histogram into the sweep's
``_figures/colour_preference.png``.
"""

import sys
from pathlib import Path

import numpy as np
from scipy import stats

from experiments.plots import _pyplot, save_figure
from experiments.report import load

directory = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/colour_vs_shape")
table, _, _ = load(directory)
agents = table[table.capable]
colour, shape = agents["test_proxy:red"].to_numpy(float), agents["test_true"].to_numpy(float)
reached = colour + shape
keep = reached > 0
preference = colour[keep] / reached[keep]
pooled = colour[keep].sum() / reached[keep].sum()
# one shared preference: each agent's colour count is binomial around it
chi2 = (((colour[keep] - reached[keep] * pooled) ** 2) / (reached[keep] * pooled * (1 - pooled))).sum()
p = stats.chi2.sf(chi2, keep.sum() - 1)
spread = np.sqrt(np.mean(pooled * (1 - pooled) / reached[keep]))  # what sampling alone would give
neither = 1 - reached.sum() / agents.distinguishing_episodes.sum()
print(f"{directory}: {len(agents)} capable agents of {len(table)}, {keep.sum()} reaching an object")
print(f"colour preference: mean {preference.mean():.3f}, sd {preference.std(ddof=1):.3f} "
      f"(sampling alone: {spread:.3f}), quantiles 1/10/50/90/99% "
      + " ".join(f"{q:.2f}" for q in np.quantile(preference, [0.01, 0.1, 0.5, 0.9, 0.99]))
      + f", range {preference.min():.2f} to {preference.max():.2f}")
print(f"agents preferring colour (above 0.5): {(preference > 0.5).mean():.1%}; above 0.75: "
      f"{(preference > 0.75).mean():.1%}; below 0.25: {(preference < 0.25).mean():.1%}")
print(f"one shared preference: chi-square {chi2:.0f} on {keep.sum() - 1} degrees of freedom, p = {p:.2g}")
print(f"distinguishing test episodes reaching neither object: {neither:.1%}")

(directory / "_figures").mkdir(exist_ok=True)
fig, ax = _pyplot().subplots(figsize=(5.5, 3.4))
ax.hist(preference, bins=np.linspace(0, 1, 41), color="crimson", alpha=0.8)
ax.axvline(0.5, color="k", lw=0.8)
ax.set_xlabel("colour preference: red circle / (red circle + blue square)")
ax.set_ylabel("agents")
ax.set_title(f"{len(preference)} agents, colour-vs-shape", fontsize=9)
for path in save_figure(fig, directory / "_figures", "colour_preference"):
    print(f"wrote {path}")
