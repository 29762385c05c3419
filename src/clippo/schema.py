"""YAML onto dataclasses, validated: the machinery under every clippo config.

``build(cls, tree)`` maps a plain dict onto the dataclass ``cls`` (nested dataclasses, lists,
dicts of dataclasses, optional fields), coercing YAML's types and raising ``ConfigError`` that
names the full dotted path of an unknown key or a wrong value, so a typo never silently falls
back to a default. Configs (``clippo.train.config``) and evaluator options
(``clippo.eval.registry``) both go through it.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A config key or value is wrong; the message names it."""


def build(cls, data: Any, path: str = "", moved: dict[str, str] | None = None):
    """``cls(**data)`` with every field coerced to its type hint and every key checked.

    ``moved`` maps dotted paths of keys that no longer exist to a migration hint, which
    replaces the generic "unknown key" message for them.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{path or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        where = f"{path}.{key}" if path else str(key)
        if key not in known:
            if moved and where in moved:
                raise ConfigError(f"config key {where!r} has moved: {moved[where]}")
            raise ConfigError(f"unknown config key {where!r}; valid keys here: {sorted(known)}")
    kwargs = {k: _coerce(hints[k], v, f"{path}.{k}" if path else k, moved) for k, v in data.items()}
    return cls(**kwargs)


def _coerce(hint, value: Any, path: str, moved: dict[str, str] | None):
    if dataclasses.is_dataclass(hint):
        return build(hint, value or {}, path, moved)
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, path, moved)
    if origin is list:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        return [_coerce(args[0], v, path, moved) for v in value] if args else list(value)
    if hint is dict or origin is dict:
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        if args and dataclasses.is_dataclass(args[1]):
            return {k: _coerce(args[1], v, f"{path}.{k}", moved) for k, v in value.items()}
        return dict(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true/false, got {value!r}")
        return value
    if hint in (int, float):
        if isinstance(value, str):  # YAML 1.1 reads "3e-4" (no dot) as a string.
            try:
                value = float(value)
            except ValueError:
                raise ConfigError(f"{path}: expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        if hint is int and float(value) != int(value):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return hint(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return value
    return value


def read_yaml(path: str | os.PathLike) -> dict:
    """A YAML mapping from ``path``; a syntax error or a non-mapping names the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} not found")
    try:
        tree = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {_yaml_problem(e)}") from None
    if tree is None:
        return {}
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: expected a mapping at the top, got {type(tree).__name__}")
    return tree


def apply_overrides(tree: dict, overrides: list[str] | tuple[str, ...]) -> dict:
    """A deep copy of ``tree`` with ``section.key=value`` overrides applied (values are YAML)."""
    tree = _deepcopy(tree)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as e:
            problem = _yaml_problem(e)
            raise ConfigError(
                f"override {item!r}: the value is not valid YAML: {problem}"
            ) from None
        _set_dotted(tree, key.strip(), value)
    return tree


def _yaml_problem(e: yaml.YAMLError) -> str:
    """YAML's complaint in one line: what is wrong, and where (its own message spans lines)."""
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    mark = getattr(e, "problem_mark", None)
    return f"{problem} (line {mark.line + 1}, column {mark.column + 1})" if mark else problem


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    node = tree
    for p in parents:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {dotted}: {p!r} is not a section")
    node[last] = value


def _deepcopy(tree: Any) -> Any:
    if isinstance(tree, dict):
        return {k: _deepcopy(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_deepcopy(v) for v in tree]
    return tree
