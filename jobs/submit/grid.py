"""A sweep's grid: ``--grid section.key=v1,v2,...`` flags -> the combinations and their names (no torch).

Pure functions (unit-tested without a cluster): :func:`parse_grid` reads the flags,
:func:`expand` gives every combination in a fixed order (the first ``--grid`` varies slowest), and
:func:`element_names` names each combination after its values, e.g. ``w_gan=0.1,gan_start_fraction=0.6``
(the last part of each key; the whole key where two keys share a last part). A name holds only
letters, digits and ``. _ + - = ,``: any other character of a value becomes ``_``. Values are
split on commas outside brackets and quotes (``optim.betas=[0.8,0.99],[0.9,0.999]`` has two values)
and are passed on as ``--set`` text, type-checked by the trainer's config loader like any ``--set``.
"""

from __future__ import annotations

import dataclasses
import itertools
import re

from jobs.runs import LaunchError
from jobs.submit import validate

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+")
_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")
MAX_NAME = 200  # a path component is at most 255 bytes on common file systems


@dataclasses.dataclass(frozen=True)
class Axis:
    key: str  # section.key
    values: tuple[str, ...]  # the texts as given (YAML, parsed by the config loader)


@dataclasses.dataclass(frozen=True)
class Element:
    index: int  # the array task id
    name: str  # the run directory's name under the sweep's root
    overrides: tuple[str, ...]  # section.key=value, one per axis


def split_values(text: str) -> list[str]:
    """``a,b,[c,d],'e,f'`` -> ['a', 'b', '[c,d]', "'e,f'"]: commas inside brackets or quotes stay."""
    values, depth, quote, current = [], 0, None, []
    for char in text:
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
        elif char == "," and depth == 0:
            values.append("".join(current).strip())
            current = []
            continue
        current.append(char)
    values.append("".join(current).strip())
    return values


def parse_grid(flags: list[str], fixed: list[str] = ()) -> list[Axis]:
    """``--grid`` texts -> axes. ``fixed``: the ``--set`` overrides (a key may not be in both)."""
    if not flags:
        raise LaunchError("a sweep needs at least one --grid section.key=v1,v2 (e.g. --grid loss.w_gan=0.05,0.1,0.3)")
    fixed_keys = {item.split("=", 1)[0].strip() for item in fixed}
    axes: list[Axis] = []
    for flag in flags:
        validate.argument(flag, "--grid")  # as --set: a newline would end the value (the rest a YAML comment)
        key, sep, text = flag.partition("=")
        key = key.strip()
        if not sep or not _KEY.fullmatch(key):
            raise LaunchError(f"--grid {flag!r}: expected section.key=v1,v2,... (e.g. --grid loss.w_gan=0.05,0.1)")
        values = split_values(text)
        if any(not v for v in values):
            raise LaunchError(f"--grid {flag!r}: an empty value (two commas in a row, or a trailing comma); "
                              "list the values as v1,v2,...")
        duplicates = sorted({v for v in values if values.count(v) > 1})
        if duplicates:
            raise LaunchError(f"--grid {flag!r}: value {duplicates[0]!r} is listed twice; give each value once")
        if any(axis.key == key for axis in axes):
            raise LaunchError(f"--grid {key}: the key is given by two --grid flags; list all its values in one")
        if key in fixed_keys:
            raise LaunchError(f"--grid {key}: the key is also set with --set; drop one of them")
        axes.append(Axis(key, tuple(values)))
    return axes


def _short_keys(keys: list[str]) -> list[str]:
    last = [key.rsplit(".", 1)[-1] for key in keys]
    return [short if last.count(short) == 1 else key for key, short in zip(keys, last, strict=True)]


def safe_value(text: str) -> str:
    """A value as it appears in a run directory's name: letters, digits and . _ + - only."""
    return _UNSAFE.sub("_", text.strip("'\"")).strip("_") or "_"


def element_names(axes: list[Axis], combos: list[tuple[str, ...]]) -> list[str]:
    short = _short_keys([axis.key for axis in axes])
    names = [",".join(f"{k}={safe_value(v)}" for k, v in zip(short, combo, strict=True)) for combo in combos]
    seen: dict[str, int] = {}
    for index, name in enumerate(names):
        if name in seen:
            first = combos[seen[name]]
            raise LaunchError(f"--grid: the values {', '.join(first)} and {', '.join(combos[index])} give the same "
                              f"run directory name {name!r} (only letters, digits and . _ + - are kept); "
                              "write the values so that they differ in those characters")
        if len(name) > MAX_NAME:
            raise LaunchError(f"--grid: the run directory name {name[:60]!r}... is {len(name)} characters long "
                              f"(at most {MAX_NAME}); sweep fewer keys at once or use shorter values")
        seen[name] = index
    return names


def check_distinct(elements: list[Element], resolved: list[dict]) -> None:
    """Two elements that train the same config (``0.1,0.10`` or ``0.1,1e-1``: the same value once
    parsed and type-checked) would be two identical runs: refused, naming the values."""
    seen: dict[str, int] = {}
    for index, config in enumerate(resolved):
        text = repr(config)
        if text in seen:
            first = elements[seen[text]]
            pairs = [(a, b) for a, b in zip(first.overrides, elements[index].overrides, strict=True) if a != b]
            listed = "; ".join(f"{a} and {b.split('=', 1)[1]}" for a, b in pairs)
            raise LaunchError(f"--grid: {listed} are the same value once read: elements {first.name} and "
                              f"{elements[index].name} would train the same run; give each value once")
        seen[text] = index


def expand(axes: list[Axis]) -> list[Element]:
    """Every combination, the first axis varying slowest; element i is array task i."""
    combos = list(itertools.product(*(axis.values for axis in axes)))
    names = element_names(axes, combos)
    return [Element(index, name, tuple(f"{axis.key}={value}" for axis, value in zip(axes, combo, strict=True)))
            for index, (name, combo) in enumerate(zip(names, combos, strict=True))]
