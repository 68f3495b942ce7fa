"""Distillation methods: each file ``distiller_zoo/<key>.py`` is the method ``--distill <key>``.

Importing the package imports every module in it; each ``@register``-ed ``Distiller`` subclass
becomes a key of ``METHODS`` (the registry: the only list of methods, read by the flags, the
sweeps, the results summary, the tests and the README table). The names a module lists in
``__all__`` (its loss classes and functions, e.g. ``DistillKL``, ``dkd_loss``) are importable from
``distiller_zoo`` directly, as in RepDistiller.

To add a method, write one file: see the README's "Add a method".
"""
from __future__ import annotations

import importlib
import pkgutil

from distiller_zoo.base import (  # noqa: F401
    METHODS, PRESETS, DistillContext, Distiller, Features, Flag, deployed_from_checkpoint, register)
from helper.loop import Progress  # noqa: F401

# The row order of the published tables (CRD, then the methods added since); methods not listed
# here follow in alphabetical order of their keys (presets, e.g. dot, by their names).
TABLE_ORDER = ("kd", "hint", "attention", "similarity", "correlation", "vid", "rkd", "pkt", "abound", "factor",
               "fsp", "nst", "crd", "rrd", "dcd")


def _discover() -> None:
    """Import every module of the package, export its ``__all__`` here, and order ``METHODS``."""
    for module_info in sorted(pkgutil.iter_modules(__path__), key=lambda info: info.name):
        module = importlib.import_module(f"{__name__}.{module_info.name}")
        globals().update({name: getattr(module, name) for name in getattr(module, "__all__", ())})
    ordered = sorted(METHODS.items(), key=lambda item: _table_position(item[0]))
    METHODS.clear()
    METHODS.update(ordered)


def _table_position(name: str) -> tuple[int, str]:
    return TABLE_ORDER.index(name) if name in TABLE_ORDER else len(TABLE_ORDER), name


def table_names() -> list[str]:
    """The methods' keys and the presets' names (``dot``) in the tables' and sweeps' row order."""
    return sorted([*METHODS, *PRESETS], key=_table_position)


_discover()
from distiller_zoo.task import DistillTask  # noqa: E402,F401
