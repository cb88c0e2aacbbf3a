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
import math
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp

from gridsim.core import EnvParams, GridEnv
from gridsim.plugin_errors import user_errors, users_file

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
        unique = _plugin_module(path)
        if unique not in sys.modules:
            spec = importlib.util.spec_from_file_location(unique, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[unique] = module
            before = set(sys.modules)
            try:
                spec.loader.exec_module(module)
            except Exception as err:  # the user's file, whatever it raises: name it and the error
                del sys.modules[unique]
                where = f" (line {err.lineno})" if isinstance(err, SyntaxError) else ""
                raise ValueError(f"plug-in file {path} failed to load{where}: {type(err).__name__}: {err}") from None
            module.__gridsim_helpers__ = _user_files(sys.modules[name] for name in set(sys.modules) - before)
        module = sys.modules[unique]
    else:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            raise ValueError(f"cannot import plug-in module {module_name!r}: {err}") from err
        except Exception as err:
            raise ValueError(f"plug-in module {module_name!r} failed to load: {type(err).__name__}: {err}") from None
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise ValueError(f"plug-in module {module_name!r} has no attribute {attribute!r}") from None


def _user_files(modules) -> list[str]:
    """The source files of ``modules`` that are the user's own (``plugin_errors.users_file``)."""
    files = [getattr(module, "__file__", None) for module in modules]
    return sorted(str(Path(f).resolve()) for f in files if f and f.endswith(".py") and users_file(f))


def _plugin_module(path: Path) -> str:
    """The name a plug-in file is imported under: one per file, wherever it is named from."""
    return f"gridsim_plugin_{abs(hash(str(path.resolve())))}"


def plugin_sources(reference: str) -> dict[str, str]:
    """The user's source files behind a ``file.py:attribute`` reference, path -> text: the file and the
    modules of the user's own that importing it loaded (first in this process). A helper imported
    only later, inside a function, is not among them."""
    module_name, sep, _ = reference.partition(":")
    if not sep or not module_name.endswith(".py"):
        return {}
    load(reference)
    module = sys.modules[_plugin_module(Path(module_name))]
    paths = [str(Path(module_name).resolve()), *getattr(module, "__gridsim_helpers__", [])]
    return {path: Path(path).read_text(encoding="utf-8") for path in paths}


def _option_parameters(factory) -> dict[str, inspect.Parameter]:
    """The static options ``factory`` accepts, by name: through the class hierarchy (the most derived
    default wins), and for a plain function forwarding ``**kwargs``, what the env it builds takes."""
    if inspect.isclass(factory):
        callables = [c.__init__ for c in reversed(factory.__mro__) if c is not object and "__init__" in vars(c)]
    else:
        callables = [factory]
    options = {}
    for c in callables:
        for p in inspect.signature(c).parameters.values():
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self":
                options[p.name] = p
            elif p.kind == p.VAR_KEYWORD and c is factory and not inspect.isclass(factory):
                options = {**_option_parameters(type(factory())), **options}
    return options


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check_option_types(factory, options: dict) -> None:
    """Static options are whole numbers or strings as their defaults are: ``height = "five"`` or
    ``height = 5.5`` is named here, not deep inside the constructor."""
    parameters = _option_parameters(factory)
    for key, value in options.items():
        default = parameters[key].default
        if isinstance(default, int) and not isinstance(default, bool):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"option {key!r} must be a whole number, got {value!r}")
        elif isinstance(default, str) and not isinstance(value, str):
            raise ValueError(f"option {key!r} must be a string, got {value!r}")


def _check_param_types(updates: dict) -> None:
    for key, value in updates.items():
        if key == "reward_weights":
            if not isinstance(value, dict) or not all(_is_number(w) for w in value.values()):
                raise ValueError(f"reward_weights must map event names to finite numbers, got {value!r}")
            continue
        if isinstance(value, bool) or not _is_number(value):
            raise ValueError(f"param {key!r} must be a finite number, got {value!r}")
        if isinstance(value, int) and not -(2**31) <= value < 2**31:
            raise ValueError(f"param {key!r} = {value} does not fit a 32-bit integer")


def make(name: str, **overrides) -> tuple[GridEnv, EnvParams]:
    """``(env, params)`` for a registered name or a plug-in reference.

    Each override is either a static option of the environment (grid size,
    ``observation``, capacities: these compile into the program) or a field of
    its params (traced: ``alpha``, ``max_steps_in_episode``, counts, ...).
    ``reward_weights`` overrides are merged into the defaults.

    Before anything compiles, the environment's functions are traced once abstractly
    (``GridEnv.check_functions``): an event declared but not returned by ``interact``, or returned
    but not declared, is refused with a ``ValueError`` naming it, and an exception raised in a
    plug-in's code (its constructor, ``sample_level``, ``interact``, ``goal_targets``, a hook) becomes
    a one-line ``ValueError`` naming the plug-in, the function and the exception. A true goal that
    the default reward never pays is a warning (``GridEnv.reward_problem``).
    """
    if not isinstance(name, str):
        raise ValueError(f"an environment is named by a string, got {name!r}")
    if name in _REGISTRY:
        factory = _REGISTRY[name]
    elif ":" in name:
        factory = load(name)
    else:
        raise ValueError(f"unknown environment {name!r}; registered: {', '.join(sorted(_REGISTRY))}")
    if not (inspect.isclass(factory) and issubclass(factory, GridEnv)) and not inspect.isfunction(factory):
        raise ValueError(f"{name!r} is not a gridsim environment: name a GridEnv subclass or a function "
                         f"returning one (got {type(factory).__name__})")
    with user_errors(name, factory):  # a function's options are those of the env it returns: it is called
        static_options = set(_option_parameters(factory))
    static = {k: v for k, v in overrides.items() if k in static_options}
    _check_option_types(factory, static)
    with user_errors(name, factory):
        env = factory(**static)
    if not isinstance(env, GridEnv):
        raise ValueError(f"{name!r} did not produce a gridsim GridEnv (got {type(env).__name__})")
    with user_errors(name, factory, env):
        params = env.default_params()
    param_fields = {f.name for f in dataclasses.fields(params)}
    unknown = set(overrides) - static_options - param_fields
    if unknown:
        raise ValueError(
            f"unknown option(s) {sorted(unknown)} for {name!r}; "
            f"static options: {sorted(static_options)}; params: {sorted(param_fields)}"
        )
    updates = {k: v for k, v in overrides.items() if k in param_fields}
    _check_param_types(updates)
    if "reward_weights" in updates:
        updates["reward_weights"] = {**params.reward_weights, **updates["reward_weights"]}
    params = params.replace(**updates)
    with user_errors(name, factory, env):
        env.check_params(params)
        env.check_goals()
        _check_functions(env, params, factory, static)
    problem = env.reward_problem(params)
    if problem:
        warnings.warn(problem, stacklevel=2)
    return env, params


_CHECKED: set = set()  # (factory, static options, params' structure) whose functions traced cleanly


def _check_functions(env: GridEnv, params: EnvParams, factory, static: dict) -> None:
    """``env.check_functions(params)`` once per factory, static options and params' shapes: tracing
    depends on nothing else, and an environment made again (every CLI command, every sweep chunk)
    is not traced again. Options that cannot be hashed (hooks in dicts) are traced every time."""
    leaves, structure = jax.tree_util.tree_flatten(params)
    try:
        key = (factory, tuple(sorted(static.items())), structure,
               tuple((jnp.shape(x), jnp.result_type(x).name) for x in leaves))
        hash(key)
    except TypeError:
        key = None
    if key is not None and key in _CHECKED:
        return
    env.check_functions(params)
    if key is not None:
        _CHECKED.add(key)
