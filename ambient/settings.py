"""Settings defined once: a dataclass field carries its default, bounds, choices and help text.

Everything else is derived from the field: the checks (`check_settings`, from the dataclass's
__post_init__), the CLI options (ambient.cli.common.add_settings) and the workflow schema's section
(`schema_properties`, written into workflow/schemas/config.schema.yaml by `python -m ambient schema`,
whose test holds the file equal to it). Torch-free: the workflow imports it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re

# Network precision of training, sampling and the attacks: fp32, or bfloat16 autocast.
PRECISIONS = ("fp32", "bf16")
# The latent (SDXL) branch's frozen weights may also be float16.
LATENT_PRECISIONS = (*PRECISIONS, "fp16")

_JSON_TYPES = {"int": "integer", "float": "number", "bool": "boolean", "str": "string"}
_BOUNDS = {
    "minimum": (lambda v, b: v >= b, ">="),
    "exclusive_minimum": (lambda v, b: v > b, ">"),
    "maximum": (lambda v, b: v <= b, "<="),
    "exclusive_maximum": (lambda v, b: v < b, "<"),
}


def setting(
    default=dataclasses.MISSING, *, help: str, factory=None, choices=None, item_minimum=None, min_items=0, **bounds
):
    """A dataclass field that is a user setting: `bounds` among minimum, exclusive_minimum, maximum,
    exclusive_maximum; a list setting takes `factory`, at least `min_items` items, each >= `item_minimum`."""
    unknown = set(bounds) - set(_BOUNDS)
    if unknown:
        raise TypeError(f"setting(): unknown bounds {sorted(unknown)}")
    meta = {"help": help, "choices": tuple(choices) if choices else None, "item_minimum": item_minimum, **bounds}
    meta["min_items"] = min_items
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata={"setting": meta})
    return dataclasses.field(default=default, metadata={"setting": meta})


def settings_of(cls, exclude: tuple[str, ...] = ()) -> list[dataclasses.Field]:
    """The fields of a dataclass that are settings, in definition order."""
    return [f for f in dataclasses.fields(cls) if "setting" in f.metadata and f.name not in exclude]


def default_value(f: dataclasses.Field):
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def _type_name(f: dataclasses.Field) -> str:
    return f.type if isinstance(f.type, str) else f.type.__name__


def _problem(f: dataclasses.Field, value) -> str | None:
    """Why `value` is not a valid value of setting `f` (None: it is)."""
    meta, kind = f.metadata["setting"], _type_name(f)
    if kind == "bool":
        return None if isinstance(value, bool) else "must be true or false"
    if kind.startswith("list"):
        if not isinstance(value, (list, tuple)) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in value
        ):
            return "must be a list of integers"
        if len(value) < meta["min_items"]:
            return f"must hold at least {meta['min_items']} integer(s)"
        low = meta["item_minimum"]
        return None if low is None or all(v >= low for v in value) else f"must hold integers >= {low}"
    if meta["choices"]:
        return None if value in meta["choices"] else f"is unknown: use one of {', '.join(meta['choices'])}"
    if kind == "int" and (not isinstance(value, int) or isinstance(value, bool)):
        return "must be an integer"
    if kind == "float":
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return "must be a number"
        if not math.isfinite(value):
            return "must be a finite number"
    for key, (ok, sign) in _BOUNDS.items():
        bound = meta.get(key)
        if bound is not None and not ok(value, bound):
            return f"must be {sign} {bound}"
    return None


def check_settings(obj, where: str = "") -> None:
    """Refuse the first setting of dataclass instance `obj` that breaks its type, choices or bounds."""
    for f in settings_of(type(obj)):
        value = getattr(obj, f.name)
        problem = _problem(f, value)
        if problem:
            raise ValueError(f"{where}{f.name}={value!r} {problem}")


def schema_properties(cls, exclude: tuple[str, ...] = ()) -> dict[str, dict]:
    """JSON-schema properties of the settings of `cls`: type, choices, bounds, default, description."""
    out = {}
    for f in settings_of(cls, exclude):
        meta, kind = f.metadata["setting"], _type_name(f)
        if kind.startswith("list"):
            items = {"type": "integer"}
            if meta["item_minimum"] is not None:
                items["minimum"] = meta["item_minimum"]
            prop = {"type": "array", "items": items}
            if meta["min_items"]:
                prop["minItems"] = meta["min_items"]
        elif meta["choices"]:
            prop = {"enum": list(meta["choices"])}
        else:
            prop = {"type": _JSON_TYPES[kind]}
        for key in _BOUNDS:
            if meta.get(key) is not None:
                prop[re.sub(r"_(\w)", lambda m: m[1].upper(), key)] = meta[key]
        prop["default"] = default_value(f)
        prop["description"] = meta["help"]
        out[f.name] = prop
    return out


def non_finite_values(tree, where: str = "") -> list[tuple[str, float]]:
    """(key path, value) of every NaN or infinite float in a config tree: `training.lr`,
    `corruptions[1].sigma_n`. The JSON schema cannot refuse them (NaN passes every bound)."""
    if isinstance(tree, float):
        return [] if math.isfinite(tree) else [(where, tree)]
    if isinstance(tree, dict):
        items = ((f"{where}.{k}" if where else str(k), v) for k, v in tree.items())
    elif isinstance(tree, (list, tuple)):
        items = ((f"{where}[{i}]", v) for i, v in enumerate(tree))
    else:
        return []
    return [bad for path, v in items for bad in non_finite_values(v, path)]


def finite_float(text: str) -> float:
    """argparse type of every float option: a number, and finite (inf and nan pass every bound)."""
    import argparse

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


# ---------------------------------------------------------------- the schema file's generated sections

_BLOCK = re.compile(
    r"^(?P<indent>[ ]*)# BEGIN settings (?P<name>\w+)[^\n]*\n(?P<body>.*?)^(?P=indent)# END settings (?P=name)\n",
    re.S | re.M,
)


def render_block(cls, exclude: tuple[str, ...], indent: str) -> str:
    """One YAML line (JSON flow style) per setting."""
    props = schema_properties(cls, exclude)
    return "".join(f"{indent}{name}: {json.dumps(prop)}\n" for name, prop in props.items())


def update_schema(text: str, sections: dict[str, tuple[type, tuple[str, ...]]]) -> str:
    """The schema text with every `# BEGIN settings <name>` ... `# END settings <name>` block rewritten
    from sections[name] = (dataclass, excluded fields). A block without a section is an error."""
    seen = set()

    def body(m: re.Match) -> str:
        name, indent = m["name"], m["indent"]
        if name not in sections:
            raise ValueError(f"schema block {name!r} has no settings dataclass (known: {', '.join(sections)})")
        seen.add(name)
        head = f"{indent}# BEGIN settings {name} (generated by python -m ambient schema; do not edit)\n"
        return head + render_block(*sections[name], indent) + f"{indent}# END settings {name}\n"

    new = _BLOCK.sub(body, text)
    missing = set(sections) - seen
    if missing:
        raise ValueError(f"the schema has no block for {sorted(missing)}")
    return new
