"""Sweep files: TOML, validated before anything runs.

```toml
name = "coin_alpha"          # results go to runs/<name> unless `out` is given
env = "coin-at-end"          # registered name, "file.py:Attribute" (beside this file) or "module:attribute"
seeds = 16                   # agents per sweep point
seed = 0                     # base random seed
out = "runs/coin_alpha"      # optional

[env_options]                # static options and fixed param overrides, as gridsim.make takes them
height = 5

[sweep]                      # traced params to sweep; the grid is their cartesian product
alpha = [0.0, 0.05, 0.2]

[ppo]                        # any agents.ppo.Config field
total_timesteps = 100000

[curriculum]                 # optional; agents.curriculum.Config: which levels training plays
method = "plr"               # "dr" (default), "plr" or "accel"
score = "regret"             # "regret", "pvl", "maxmc", "neg-return" or "learnability"
buffer_size = 256            # replay_prob, temperature, staleness and edits may also be swept in [sweep]

[eval]
episodes = 256               # test episodes per agent

[run]                        # how, not what: never changes the digest
points_per_chunk = 2         # sweep points per compiled call (default: as many as fit memory)
```
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import tomllib
import warnings
from pathlib import Path

import numpy as np

from agents import curriculum as curricula
from agents import ppo

TOP_LEVEL = {"name", "env", "seeds", "seed", "out", "env_options", "sweep", "ppo", "curriculum", "eval", "run"}
EVAL_KEYS = {"episodes"}
RUN_KEYS = {"points_per_chunk"}
MAX_SEEDS = 1 << 20  # agents per sweep point

# shared with the CLI's options, so that a sweep file and a command line refuse alike
SEED_RANGE = "[0, 2**32) (a JAX key holds 32 bits)"
LEVEL_SEED_IS_PER_AGENT = ("every agent trains on its own levels (level_seed from its seed); "
                           "set num_levels, not level_seed")


def seed_in_range(seed: int) -> bool:
    return 0 <= seed < 2**32


class SpecError(ValueError):
    """A sweep file that cannot run; the message names the file and the key."""


@dataclasses.dataclass(frozen=True)
class SweepSpec:
    name: str
    env: str
    seeds: int
    seed: int
    out: Path
    env_options: dict
    sweep: dict  # param name -> list of values
    ppo: ppo.Config
    eval_episodes: int
    source: str  # the file's text, for the manifest
    points_per_chunk: int | None = None  # None: as many as fit memory
    folder: Path | None = None  # the sweep file's folder: a plug-in file's path is relative to it
    curriculum: curricula.Config = curricula.Config()

    @property
    def env_reference(self) -> str:
        """``env`` as ``gridsim.make`` takes it: a relative plug-in file path joined to ``folder``."""
        module, sep, attribute = self.env.partition(":")
        if sep and module.endswith(".py") and self.folder is not None and not Path(module).is_absolute():
            return f"{self.folder / module}:{attribute}"
        return self.env

    @property
    def points(self) -> list[dict]:
        """Every combination of the swept values, in file order."""
        names = list(self.sweep)
        return [dict(zip(names, values)) for values in itertools.product(*self.sweep.values())] or [{}]

    @property
    def digest(self) -> str:
        """Identity of what the results depend on (not of where they are written)."""
        content = {k: v for k, v in dataclasses.asdict(self).items()
                   if k not in ("out", "source", "points_per_chunk", "folder", "curriculum")}
        if self.curriculum.active:  # domain randomization's digest is what it was before curricula existed
            content["curriculum"] = dataclasses.asdict(self.curriculum)
        content["points"] = self.points  # in order: point i's settings follow the order of the [sweep] keys
        return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _expect(path, key, value, kind, what):
    if isinstance(value, bool) and kind is not bool or not isinstance(value, kind):
        raise SpecError(f"{path}: '{key}' must be {what}, got {value!r}")
    return value


def load(path) -> SweepSpec:
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")  # a byte-order mark is harmless
    except OSError as err:
        raise SpecError(f"cannot read sweep file {path}: {err.strerror}") from None
    except UnicodeDecodeError as err:
        raise SpecError(f"{path}: not UTF-8 text (byte {err.start}); save the sweep file as UTF-8") from None
    return parse(text, path)


def from_manifest(manifest: dict, where) -> SweepSpec:
    """The spec a sweep directory's manifest holds; ``where`` (the manifest's path) names it in errors."""
    folder = manifest.get("folder")
    return parse(manifest["spec"], where, folder=Path(folder) if folder else None)


def parse(text: str, path, folder: Path | None = None) -> SweepSpec:
    """The spec in ``text``; ``path`` names it in error messages and its stem is the default name.
    A plug-in file's path is relative to ``folder`` (default: ``path``'s folder)."""
    path = Path(path)
    folder = (folder or path.parent).resolve()
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise SpecError(f"{path}: not valid TOML: {err}") from None

    unknown = set(raw) - TOP_LEVEL
    if unknown:
        raise SpecError(f"{path}: unknown key(s) {sorted(unknown)}; allowed: {sorted(TOP_LEVEL)}")
    for required in ("env", "seeds"):
        if required not in raw:
            raise SpecError(f"{path}: missing required key '{required}'")
    env = _expect(path, "env", raw["env"], str, "an environment name")
    seeds = _expect(path, "seeds", raw["seeds"], int, "an integer")
    if not 1 <= seeds <= MAX_SEEDS:
        raise SpecError(f"{path}: 'seeds' must lie in [1, {MAX_SEEDS:,}], got {seeds}")
    seed = _expect(path, "seed", raw.get("seed", 0), int, "an integer")
    if not seed_in_range(seed):
        raise SpecError(f"{path}: 'seed' must lie in {SEED_RANGE}, got {seed}")
    name = _expect(path, "name", raw.get("name", path.stem), str, "a string")
    out = Path(_expect(path, "out", raw.get("out", f"runs/{name}"), str, "a path"))
    env_options = _expect(path, "env_options", raw.get("env_options", {}), dict, "a table")

    sweep = _expect(path, "sweep", raw.get("sweep", {}), dict, "a table")
    for key, values in sweep.items():
        if not isinstance(values, list) or not values:
            raise SpecError(f"{path}: 'sweep.{key}' must be a non-empty list of values, got {values!r}")
        for v in values:
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                raise SpecError(f"{path}: 'sweep.{key}' values must be finite numbers, got {v!r}")
        repeated = sorted({v for v in values if values.count(v) > 1})
        if repeated:
            raise SpecError(f"{path}: 'sweep.{key}' repeats {repeated}: each value is one sweep point")

    ppo_raw = _settings(path, "ppo", raw, ppo.Config)
    try:
        config = ppo.Config(**ppo_raw).validate()
    except ValueError as err:
        raise SpecError(f"{path}: {err}") from None

    curriculum = _curriculum(path, raw, config)

    eval_raw = _expect(path, "eval", raw.get("eval", {}), dict, "a table")
    unknown = set(eval_raw) - EVAL_KEYS
    if unknown:
        raise SpecError(f"{path}: unknown key(s) {sorted('eval.' + k for k in unknown)}")
    episodes = _expect(path, "eval.episodes", eval_raw.get("episodes", 256), int, "an integer")
    if episodes < 1:
        raise SpecError(f"{path}: 'eval.episodes' must be >= 1, got {episodes}")

    run_raw = _expect(path, "run", raw.get("run", {}), dict, "a table")
    unknown = set(run_raw) - RUN_KEYS
    if unknown:
        raise SpecError(f"{path}: unknown key(s) {sorted('run.' + k for k in unknown)}")
    per_chunk = run_raw.get("points_per_chunk")
    if per_chunk is not None and _expect(path, "run.points_per_chunk", per_chunk, int, "an integer") < 1:
        raise SpecError(f"{path}: 'run.points_per_chunk' must be >= 1, got {per_chunk}")

    spec = SweepSpec(name, env, seeds, seed, out, env_options, sweep, config, episodes, text, per_chunk, folder,
                     curriculum)
    check_against_env(spec, path)
    return spec


def _settings(path, section: str, raw: dict, config_class) -> dict:
    """The ``[section]`` table, each key a field of the dataclass ``config_class`` and of its default's
    type (an integer where a float is expected becomes one; floats must be finite)."""
    table = dict(_expect(path, section, raw.get(section, {}), dict, "a table"))
    fields = {f.name: f for f in dataclasses.fields(config_class)}
    for key, value in table.items():
        if key not in fields:
            raise SpecError(f"{path}: unknown key '{section}.{key}'; allowed: {sorted(fields)}")
        default = fields[key].default
        kind = float if isinstance(default, float) else type(default)
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        _expect(path, f"{section}.{key}", value, kind, f"of type {kind.__name__}")
        if kind is float and not math.isfinite(value):
            raise SpecError(f"{path}: '{section}.{key}' must be finite, got {value!r}")
        table[key] = value
    return table


def _curriculum(path, raw: dict, config: ppo.Config) -> curricula.Config:
    """The ``[curriculum]`` table as a checked ``agents.curriculum.Config``."""
    try:
        return curricula.Config(**_settings(path, "curriculum", raw, curricula.Config)).validate(config.num_envs)
    except ValueError as err:
        raise SpecError(f"{path}: {err}") from None


def one_point(env: str, env_options: dict, point: dict, seeds: int, seed: int, config: ppo.Config,
              eval_episodes: int, names: dict[str, str] | None = None) -> SweepSpec:
    """A sweep of one point, as ``gridsim train`` runs it: the same agents as a sweep file with these
    settings and ``[sweep]`` the point's values (each as a one-element list). Messages name each
    setting as the sweep file does, or as ``names`` maps it (a command line's flags)."""
    name = lambda key: (names or {}).get(key, key)
    if not 1 <= seeds <= MAX_SEEDS:
        raise SpecError(f"{name('seeds')} must lie in [1, {MAX_SEEDS:,}], got {seeds}")
    if not seed_in_range(seed):
        raise SpecError(f"{name('seed')} must lie in {SEED_RANGE}, got {seed}")
    if eval_episodes < 1:
        raise SpecError(f"{name('eval.episodes')} must be >= 1, got {eval_episodes}")
    spec = SweepSpec("train", env, seeds, seed, Path("runs/train"), dict(env_options),
                     {name: [value] for name, value in point.items()}, config.validate(), eval_episodes, source="")
    check_against_env(spec, None)
    return spec


def check_against_env(spec: SweepSpec, path) -> None:
    """The environment exists, takes the options, and accepts every sweep point; ``path`` (the sweep
    file, or None) starts each message."""
    import gridsim

    where = f"{path}: " if path else ""
    try:
        env, params = gridsim.make(spec.env_reference, **spec.env_options)
    except ValueError as err:
        relative = f" (a plug-in file's path is relative to the sweep file's folder, {spec.folder})" if (
            spec.env_reference != spec.env and "not found" in str(err)) else ""
        raise SpecError(f"{where}{err}{relative}") from None
    try:
        spec.curriculum.validate(spec.ppo.num_envs, env)
    except ValueError as err:
        raise SpecError(f"{where}{err}") from None
    fields = {f.name for f in dataclasses.fields(params)}
    for section, keys in (("env_options", spec.env_options), ("sweep", spec.sweep)):
        if "level_seed" in keys:
            raise SpecError(f"{where}'{section}.level_seed': {LEVEL_SEED_IS_PER_AGENT}")
    for key in spec.sweep:
        if key in curricula.Config.TRACED and key not in fields:
            if not spec.curriculum.active:
                raise SpecError(f"{where}'sweep.{key}' is a curriculum setting, and [curriculum] method is 'dr' "
                                "(no curriculum): set method to 'plr' or 'accel'")
            continue
        if key == "reward_weights":
            raise SpecError(f"{where}'sweep.reward_weights' cannot be swept (a table, not a number); set it in "
                            "[env_options], one sweep file per weighting")
        if key not in fields:
            raise SpecError(
                f"{where}'sweep.{key}' is not a traced param of {spec.env}; sweepable: {sorted(fields)} "
                "(static options such as grid size go in [env_options], one per sweep file)"
            )
        if key in spec.env_options:
            raise SpecError(f"{where}'{key}' is both in [env_options] and in [sweep]; keep it in one of them")
    longest = 0
    for point in spec.points:
        env_point, settings = split_point(point, params)
        try:
            env.check_params(params.replace(**env_point))
            longest = max(longest, int(np.max(np.asarray(params.replace(**env_point).max_steps_in_episode))))
            curricula.check_settings(**{**{k: getattr(spec.curriculum, k) for k in curricula.Config.TRACED},
                                        **settings})
        except ValueError as err:
            raise SpecError(f"{where}sweep point {point}: {err}") from None
    if spec.curriculum.active and spec.curriculum.score == "regret":
        _check_regret(spec, env, params.replace(**split_point(spec.points[0], params)[0]), where)
    if spec.curriculum.active and spec.curriculum.score != "pvl" and spec.ppo.num_steps < longest:
        warnings.warn(f"{where}ppo.num_steps ({spec.ppo.num_steps}) is shorter than an episode may last "
                      f"(max_steps_in_episode {longest}): a level whose first episode outlasts its rollout is never "
                      f"scored by {spec.curriculum.score!r}, and those are the levels an agent fails on", stacklevel=2)


def _check_regret(spec: SweepSpec, env, params, where: str, levels: int = 32) -> None:
    """Refuse a regret curriculum when no training level has an exact value: it would never replay."""
    import jax

    from gridsim import values

    drawn = jax.vmap(env.sample, (0, None))(jax.random.split(jax.random.key(spec.seed), levels), params)
    best = jax.jit(values.best_returns, static_argnums=0)(env, params, drawn, spec.ppo.gamma)
    if not bool(best.exact.any()):
        raise SpecError(f"{where}curriculum.score 'regret': none of {levels} training levels of {spec.env} has an "
                        "exact value, so no level would ever be scored (an environment that uses objects up "
                        "mid-episode lists their kinds in consumable_kinds)")


def split_point(point: dict, params) -> tuple[dict, dict]:
    """A sweep point's env params (fields of ``params``) and its curriculum settings (a name that is
    both is the env's)."""
    fields = {f.name for f in dataclasses.fields(params)}
    settings = {k: v for k, v in point.items() if k in curricula.Config.TRACED and k not in fields}
    return {k: v for k, v in point.items() if k not in settings}, settings
