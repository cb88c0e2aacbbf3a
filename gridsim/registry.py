"""``make`` / ``register``: environments by name, including users' own.

A name is either a registered one (``gridsim envs`` lists them) or a plug-in
reference ``module:attribute`` / ``path/to/file.py:attribute`` naming a
``GridEnv`` subclass or any callable returning a ``GridEnv``.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable
from pathlib import Path

from gridsim.core import EnvParams, GridEnv

_REGISTRY: dict[str, Callable[..., GridEnv]] = {}


def register(name: str, factory: Callable[..., GridEnv] | None = None, *, overwrite: bool = False):
    """Register ``factory`` (a ``GridEnv`` subclass or function) under ``name``.

    Usable as a decorator: ``@gridsim.register("my-env")``.
    """

    def add(f):
        if name in _REGISTRY and not overwrite:
            raise ValueError(f"environment {name!r} is already registered (pass overwrite=True to replace it)")
        _REGISTRY[name] = f
        return f

    return add if factory is None else add(factory)


def registered() -> dict[str, Callable[..., GridEnv]]:
    return dict(_REGISTRY)


def load(reference: str):
    """Import ``module:attribute`` or ``path/to/file.py:attribute``."""
    module_name, sep, attribute = reference.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"a plug-in reference is 'module:attribute' or 'file.py:attribute', got {reference!r}")
    if module_name.endswith(".py"):
        path = Path(module_name)
        if not path.is_file():
            raise ValueError(f"plug-in file not found: {path}")
        unique = f"gridsim_plugin_{abs(hash(str(path.resolve())))}"
        if unique not in sys.modules:
            spec = importlib.util.spec_from_file_location(unique, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[unique] = module
            spec.loader.exec_module(module)
        module = sys.modules[unique]
    else:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            raise ValueError(f"cannot import plug-in module {module_name!r}: {err}") from err
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise ValueError(f"plug-in module {module_name!r} has no attribute {attribute!r}") from None


def _constructor_options(factory) -> set[str]:
    """Names of the static options ``factory`` accepts."""
    options = set()
    if inspect.isclass(factory) and issubclass(factory, GridEnv):
        callables = [c.__init__ for c in factory.__mro__ if c is not object and "__init__" in vars(c)]
    else:
        callables = [factory]
    for c in callables:
        for p in inspect.signature(c).parameters.values():
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self":
                options.add(p.name)
            elif p.kind == p.VAR_KEYWORD and c is factory:
                # a plain function forwarding **kwargs: it takes what the env it builds takes
                options |= _constructor_options(type(factory()))
    return options


def make(name: str, **overrides) -> tuple[GridEnv, EnvParams]:
    """``(env, params)`` for a registered name or a plug-in reference.

    Each override is either a static option of the environment (grid size,
    ``observation``, capacities: these compile into the program) or a field of
    its params (traced: ``alpha``, ``max_steps_in_episode``, counts, ...).
    ``reward_weights`` overrides are merged into the defaults.
    """
    if name in _REGISTRY:
        factory = _REGISTRY[name]
    elif ":" in name:
        factory = load(name)
    else:
        raise ValueError(f"unknown environment {name!r}; registered: {', '.join(sorted(_REGISTRY))}")
    static_options = _constructor_options(factory)
    env = factory(**{k: v for k, v in overrides.items() if k in static_options})
    if not isinstance(env, GridEnv):
        raise ValueError(f"{name!r} did not produce a gridsim GridEnv (got {type(env).__name__})")
    params = env.default_params()
    param_fields = {f.name for f in dataclasses.fields(params)}
    unknown = set(overrides) - static_options - param_fields
    if unknown:
        raise ValueError(
            f"unknown option(s) {sorted(unknown)} for {name!r}; "
            f"static options: {sorted(static_options)}; params: {sorted(param_fields)}"
        )
    updates = {k: v for k, v in overrides.items() if k in param_fields}
    if "reward_weights" in updates:
        updates["reward_weights"] = {**params.reward_weights, **updates["reward_weights"]}
    params = params.replace(**updates)
    env.check_params(params)
    env.check_goals()
    return env, params
