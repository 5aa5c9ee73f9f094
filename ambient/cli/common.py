"""What every phase module of the command line shares: the command table, the help formatter, the
one --device/--threads pair, and defaults read from the dataclasses (never a second literal).

Imports nothing heavy: a command's own imports happen when its parser is built or it runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
from collections.abc import Callable
from typing import NamedTuple

from ..paths import declare_paths as declare_paths  # each command's path options (entry checks them)
from ..settings import finite_float


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps a description's line breaks and shows every option's default after its help."""


class Command(NamedTuple):
    """One sub-command: its one-line help and the function that adds its arguments (and sets `func`)."""

    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    description: str | None = None


def register(sub, commands: dict[str, Command], names=None) -> None:
    """Add `commands` (only those in `names`, when given) to the sub-commands `sub`."""
    for name, c in commands.items():
        if names is None or name in names:
            p = sub.add_parser(name, help=c.help, description=c.description or c.help, formatter_class=HelpFormatter)
            c.add_arguments(p)


# ---------------------------------------------------------------- options shared by several commands


def add_device(p: argparse.ArgumentParser) -> None:
    """--device and --threads: the one definition every torch command uses."""
    p.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda or cuda:N")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (None: torch's choice)")


def setup_device(device: str, threads: int | None):
    """Apply --threads and resolve --device to a torch.device."""
    import torch

    from ..utils import resolve_device

    if threads:
        torch.set_num_threads(threads)
    return resolve_device(device)


def add_quiet(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", action="store_true", help="no progress bars")


# ---------------------------------------------------------------- defaults from the dataclasses


def fields_of(cls) -> dict[str, dataclasses.Field]:
    """A dataclass's fields by name."""
    return {f.name: f for f in dataclasses.fields(cls)}


def field_default(f: dataclasses.Field):
    """The default a dataclass field gets when the constructor is not given it."""
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    raise KeyError(f"field {f.name} has no default")


def default_of(cls, name: str):
    """The default of field `name` of dataclass `cls`."""
    return field_default(fields_of(cls)[name])


_NUMBER_TYPES = {"int": int, "float": finite_float}


def add_field(
    p: argparse.ArgumentParser, flag: str, fields: dict[str, dataclasses.Field], help: str, key: str | None = None, **kw
) -> argparse.Action:
    """An option whose default is a dataclass field's (`key`, default: the flag's name in snake case).

    A bool field defaulting to False becomes a store_true flag; a list or tuple takes nargs="+" of its
    items' type (override with nargs=...); an int or float field gets that type."""
    f = fields[key or flag.lstrip("-").replace("-", "_")]
    value = field_default(f)
    annotation = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "")
    if isinstance(value, bool):
        if value:
            raise ValueError(f"{flag}: a store_true flag cannot change a field that defaults to True")
        return p.add_argument(flag, action="store_true", help=help, **kw)
    if isinstance(value, (list, tuple)):
        kw.setdefault("nargs", "+")
        kw.setdefault("type", type(value[0]) if value else str)
        value = list(value)
    elif annotation in _NUMBER_TYPES:
        kw.setdefault("type", _NUMBER_TYPES[annotation])
    return p.add_argument(flag, default=value, help=help, **kw)


def add_settings(p: argparse.ArgumentParser, cls, title: str, exclude: tuple[str, ...] = ()) -> None:
    """One option per setting of dataclass `cls` (ambient.settings): help, type and choices from the
    field. Options default to absent (argparse.SUPPRESS), so `given_settings` sees what was typed."""
    from ..settings import default_value, settings_of

    g = p.add_argument_group(title)
    for f in settings_of(cls, exclude):
        meta, value = f.metadata["setting"], default_value(f)
        kw = {"default": argparse.SUPPRESS, "help": f"{meta['help']} (default: {value})"}
        if isinstance(value, bool):
            kw["action"] = argparse.BooleanOptionalAction
        elif isinstance(value, list):
            kw.update(type=int, nargs="+" if meta["min_items"] else "*")
        elif meta["choices"]:
            kw["choices"] = meta["choices"]
        else:
            kw["type"] = finite_float if isinstance(value, float) else type(value)
        g.add_argument("--" + f.name.replace("_", "-"), **kw)


def given_settings(a: argparse.Namespace, cls, exclude: tuple[str, ...] = ()) -> dict:
    """The settings of `cls` given as options."""
    from ..settings import settings_of

    return {f.name: getattr(a, f.name) for f in settings_of(cls, exclude) if hasattr(a, f.name)}


def parameter_defaults(func) -> dict:
    """The keyword defaults of a function's signature (for commands without a config dataclass)."""
    return {
        k: v.default for k, v in inspect.signature(func).parameters.items() if v.default is not inspect.Parameter.empty
    }
