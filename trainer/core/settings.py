"""Typed YAML config machinery: YAML -> nested ``@dataclass(kw_only=True)`` sections.

Shared by the training config (``trainer.core.config``) and the cluster profiles
(``jobs.submit.profiles``). Pure Python + PyYAML: importing it never imports torch.

Rules (the same for files and for ``--set section.key=value`` overrides):
- an unknown key is an error naming it and listing the known keys of its section;
- a value of the wrong type, outside its range or not among its choices is an error naming
  the key, the value and what is allowed;
- a float must be finite (NaN and +-Inf are errors unless the setting says ``finite=False``) and an
  integer must fit in 64 bits (tighter bounds, e.g. what seeding accepts, are the setting's ``max``);
- a field declared without a default is required;
- a file may start with ``base: other.yaml`` (relative to itself) and then only list what differs.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from trainer.core.errors import BadInput

INT_MIN, INT_MAX = -(2**63), 2**63 - 1  # every int setting fits in int64 (torch, numpy, HDF5, JSON readers)

# What a resume may change (docs/resume-and-changes.md): every training setting declares one.
TRAJECTORY = "trajectory"  # changes what the run learns (seed, data, batch, losses, optimizer, model): refused
FREE = "free"  # changes how it runs or is watched (logging, validation cadence, workers, epochs): allowed
RESUME_CLASSES = (TRAJECTORY, FREE)


class ConfigError(BadInput):
    """A config problem a user can fix; the message is one line naming file/key/value."""


def setting(default: Any = dataclasses.MISSING, help: str = "", *, choices: tuple | None = None,
            min: float | None = None, max: float | None = None, default_factory: Any = dataclasses.MISSING,
            finite: bool = True, resume: str | None = None):
    """A config field with its reason (``help``) and its validation rules.

    ``finite=False`` allows NaN and +-Inf in a float setting (none needs it today). ``resume``:
    :data:`TRAJECTORY` or :data:`FREE`, what a resume may change (required of every training setting;
    ``trainer.core.config.config_class`` checks; the cluster profiles have none)."""
    if resume is not None and resume not in RESUME_CLASSES:
        raise ValueError(f"setting(resume={resume!r}): must be one of {RESUME_CLASSES}")
    meta = {"help": help, "choices": choices, "min": min, "max": max, "finite": finite, "resume": resume}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def section(cls: type, help: str = ""):
    """A nested section field, built from its own defaults."""
    return dataclasses.field(default_factory=cls, metadata={"help": help, "section": True})


@dataclasses.dataclass(kw_only=True)
class Section:
    """Base of every config section: checks choices and ranges after construction."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            choices, low, high = f.metadata.get("choices"), f.metadata.get("min"), f.metadata.get("max")
            if value is None:
                continue
            _check_number(f.name, value, f.metadata.get("finite", True))
            if choices is not None and value not in choices:
                raise ConfigError(f"{f.name}: {value!r} is not one of {', '.join(map(str, choices))}")
            if low is not None and value < low:
                raise ConfigError(f"{f.name}: {value!r} is below the minimum {low}")
            if high is not None and value > high:
                raise ConfigError(f"{f.name}: {value!r} is above the maximum {high}")
        self.validate()

    def validate(self) -> None:
        """Cross-field checks; subclasses raise ConfigError starting with the field name."""


def _check_number(name: str, value: Any, finite: bool) -> None:
    """Non-finite floats (unless allowed) and integers beyond int64, also inside lists."""
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_number(f"{name}[{i}]", item, finite)
    elif isinstance(value, float) and finite and not math.isfinite(value):
        raise ConfigError(f"{name}: {value!r} is not a finite number")
    elif isinstance(value, int) and not isinstance(value, bool) and not INT_MIN <= value <= INT_MAX:
        raise ConfigError(f"{name}: {_short(value)} is out of range (an integer setting must fit in 64 bits)")


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "null"
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin in (list, tuple):
        args = typing.get_args(tp)
        return f"list of {_type_name(args[0])}" if args else "list"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; returns the (possibly converted) value."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key}: {value!r} is not a {_type_name(tp)}")
    if origin in (list, tuple):
        if isinstance(value, str):  # "--set data.valid_speakers=p226,p287"
            value = [v for v in value.split(",") if v]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: {value!r} is not a {_type_name(tp)}")
        (item_tp, *_) = typing.get_args(tp) or (Any,)
        items = [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: {value!r} is not a bool (use true or false)")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: {value!r} is not an int")
    if tp is float:
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            try:  # a str: PyYAML (YAML 1.1) reads 1e-3 without a dot as a string
                return float(value)
            except OverflowError:
                raise ConfigError(f"{key}: {_short(value)} is out of range for a float") from None
            except ValueError:
                pass
        raise ConfigError(f"{key}: {_short(value)} is not a float")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}: {value!r} is not a str")
    raise ConfigError(f"{key}: unsupported field type {tp!r}")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:28]}...{text[-12:]} ({len(text)} characters)"


def build(cls: type, data: dict | None, prefix: str = "") -> Any:
    """Build the dataclass ``cls`` from a plain dict, strictly."""
    data = {} if data is None else data
    where = prefix.rstrip(".") or "top level"
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of keys, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in data if k not in fields]
    if unknown:
        raise ConfigError(f"unknown key {prefix}{unknown[0]!s}; valid keys in {where}: {', '.join(sorted(fields))}")
    kwargs = {}
    for name, f in fields.items():
        key = f"{prefix}{name}"
        tp = hints[name]
        if f.metadata.get("section"):
            kwargs[name] = build(tp, data.get(name), prefix=f"{key}.")
        elif name in data:
            kwargs[name] = _coerce(data[name], tp, key)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing required key {key} ({f.metadata.get('help', '')})".rstrip(" ()"))
    try:
        return cls(**kwargs)
    except ConfigError as exc:  # __post_init__ names the bare field; add the section path
        raise ConfigError(f"{prefix}{exc}") from None


def resume_classes(cls: type, prefix: str = "") -> dict[str, str | None]:
    """``section.key`` -> the setting's resume class (None where it declares none), every leaf of ``cls``."""
    hints = typing.get_type_hints(cls)
    out: dict[str, str | None] = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        if f.metadata.get("section"):
            out.update(resume_classes(hints[f.name], prefix=f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = f.metadata.get("resume")
    return out


def to_dict(obj: Any) -> Any:
    """Dataclass tree -> plain dict (for YAML and checkpoints)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.init}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj


def read_yaml(path: str | Path) -> dict:
    """Read one YAML mapping; errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start}); "
                          "save the file as UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise ConfigError(f"{where}: invalid YAML: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(data).__name__}")
    return data


def deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def read_with_bases(path: str | Path, _seen: tuple = ()) -> dict:
    """Read a YAML file, resolving ``base:`` chains (relative to each file)."""
    path = Path(path).resolve()
    if path in _seen:
        raise ConfigError(f"{path}: base configs form a cycle: {' -> '.join(map(str, _seen + (path,)))}")
    data = read_yaml(path)
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ConfigError(f"{path}: 'base' must be a file name, got {base!r}")
    return deep_merge(read_with_bases(path.parent / base, _seen + (path,)), data)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``section.key=value`` -> (["section", "key"], parsed value). The value is YAML-parsed."""
    if "=" not in text:
        raise ConfigError(f"malformed override {text!r}: expected section.key=value")
    key, raw = text.split("=", 1)
    parts = key.strip().split(".")
    if not key.strip() or any(not p for p in parts):
        raise ConfigError(f"malformed override {text!r}: expected section.key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw  # not YAML: keep the literal text, the field type decides
    if isinstance(value, (dict, list)) and not raw.strip().startswith(("[", "{")):
        value = raw
    return parts, value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    data = dict(data)
    for text in overrides:
        parts, value = parse_override(text)
        node = data
        for part in parts[:-1]:
            child = node.get(part)
            child = dict(child) if isinstance(child, dict) else {}
            node[part] = child
            node = child
        node[parts[-1]] = value
    return data


def dump_yaml(obj: Any) -> str:
    return yaml.safe_dump(to_dict(obj), sort_keys=False, default_flow_style=False)


def describe(cls: type, prefix: str = "") -> list[str]:
    """One line per setting: key, type, default and why it exists (for ``--help-config``)."""
    lines = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        if f.metadata.get("section"):
            lines.append(f"{prefix}{f.name}:  # {f.metadata.get('help', '')}")
            lines += describe(hints[f.name], prefix=f"{prefix}{f.name}.")
            continue
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else "REQUIRED")
        extra = ""
        if f.metadata.get("choices"):
            extra = f" one of {list(f.metadata['choices'])}"
        lines.append(f"  {prefix}{f.name} ({_type_name(hints[f.name])}{extra}) = {default!r}  "
                     f"# {f.metadata.get('help', '')}")
    return lines
