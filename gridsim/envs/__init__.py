"""Built-in environments. Every module of this package defines one and is imported and registered
here, under the environment's ``name``: adding a built-in environment is adding its module (with its
tests and its example sweep), nothing else."""

import importlib
import pkgutil

from gridsim.core import GridEnv
from gridsim.registry import register

__all__ = []
for _info in pkgutil.iter_modules(__path__):
    _module = importlib.import_module(f"{__name__}.{_info.name}")
    for _value in vars(_module).values():
        if isinstance(_value, type) and issubclass(_value, GridEnv) and _value.__module__ == _module.__name__:
            register(_value.name, _value)
            globals()[_value.__name__] = _value
            __all__.append(_value.__name__)
