"""An exception raised in a user's environment code, told in one line: which plug-in, which of its
functions, what it raised and where. ``gridsim.make`` and ``check_env`` run the user's code under
``user_errors``; gridsim's own errors pass unchanged, so a bug in gridsim still shows its traceback.
"""

from __future__ import annotations

import contextlib
import sysconfig
import traceback
from pathlib import Path

import jax

from gridsim.core import GridEnv

_GRIDSIM = Path(__file__).resolve().parent
_LIBRARIES = tuple({Path(p).resolve() for p in (sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["platstdlib"])})


_SUBCLASSES_WRITE = ("default_params", "sample_level", "interact")


def _module(frame) -> str:
    return frame.f_globals.get("__name__", "")


def _is_gridsim(frame) -> bool:
    name = _module(frame)
    return name == "gridsim" or name.startswith("gridsim.")


def _is_user(frame, user_modules: set[str]) -> bool:
    """A frame of the user's code: a module of the plug-in's (its classes', its functions'), or any
    source file that is neither gridsim's nor a library's (an installed package or Python's own)."""
    if _is_gridsim(frame):
        return False
    if _module(frame) in user_modules:
        return True
    return users_file(frame.f_code.co_filename)


def users_file(file: str) -> bool:
    """A source file of the user's: neither gridsim's nor a library's (an installed package or Python's
    own), and a real file (not ``<string>``)."""
    if file.startswith("<"):
        return False
    path = Path(file).resolve()
    if path.is_relative_to(_GRIDSIM) or {"site-packages", "dist-packages"} & set(path.parts):
        return False
    return not any(path.is_relative_to(root) for root in _LIBRARIES)


def _modules_of(owners) -> set[str]:
    modules = set()
    for owner in owners:
        if isinstance(owner, GridEnv):
            hooks = (*owner.extra_events.values(), *owner.extra_targets.values(), *owner.extra_measures.values(),
                     *owner.extra_candidates.values(), owner.reward_fn)
            owners_too = [*type(owner).__mro__, *(h for h in hooks if h is not None)]
        elif isinstance(owner, type):
            owners_too = list(owner.__mro__)
        else:
            owners_too = [owner]
        modules |= {getattr(o, "__module__", None) or "" for o in owners_too}
    return {m for m in modules if m and m != "builtins" and m != "gridsim" and not m.startswith("gridsim.")}


def _first_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else ""


def _users_error(label: str, err: Exception, owners) -> str | None:
    """The one-line message for ``err`` when it was raised in the user's code, else None."""
    frames = list(traceback.walk_tb(err.__traceback__))
    if isinstance(err, NotImplementedError) and frames and _is_gridsim(frames[-1][0]) \
            and frames[-1][0].f_code.co_name in _SUBCLASSES_WRITE:
        return f"{label}: {_first_line(err)}"  # a method GridEnv leaves to its subclasses, not written
    user_modules = _modules_of(owners)
    users = [(frame, line) for frame, line in frames if _is_user(frame, user_modules)]
    if not users:
        return None  # gridsim's own error, or a library's: unchanged
    cause = err.__cause__  # JAX's traceback filtering keeps the whole traceback here
    whole = cause.__traceback__ if type(cause).__name__ == "UnfilteredStackTrace" else err.__traceback__
    raised_in = [frame for frame, _ in traceback.walk_tb(whole)][-1]
    if isinstance(err, ValueError) and (_is_gridsim(raised_in) or _is_user(raised_in, user_modules)):
        return None  # a message raised on purpose (``check_room``, a ``check_params`` of the user's): as it is
    frame, line = users[-1]
    text = _first_line(err)
    if isinstance(err, jax.errors.TracerBoolConversionError | jax.errors.ConcretizationTypeError):
        text += " (a Python if, bool() or int() on a traced value: use jnp.where)"
    return (f"{label}: {frame.f_code.co_qualname} raised {type(err).__name__}{': ' + text if text else ''} "
            f"({Path(frame.f_code.co_filename).name}, line {line})")


@contextlib.contextmanager
def user_errors(label: str, *owners):
    """Re-raise an exception raised in the user's code (a plug-in's class or functions, hooks such as
    ``reward_fn``; ``owners`` are the factory and the environment) as one line: a ``ValueError``
    naming ``label``, the function, the exception's type and message, and where. gridsim's own
    errors, and the ``ValueError`` a plug-in raises on purpose, pass unchanged."""
    try:
        yield
    except Exception as err:
        message = _users_error(label, err, owners)
        if message is None:
            raise
        raise ValueError(message) from err
