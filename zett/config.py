"""The one config system: frozen dataclasses, loaded from YAML, overridden by dotted CLI keys.

Unknown keys and malformed overrides are errors, raised before anything is compiled.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from zett.errors import ZettError

T = TypeVar("T")


class ConfigError(ZettError, ValueError):
  """A config file or override that does not fit the schema, or a setting the chosen base or data cannot run with;
  the message names the setting."""


def check_range(name: str, value: float, low: float, high: float) -> None:
  """Raises ConfigError naming `name` and the allowed range unless low <= value <= high (for `__post_init__`)."""
  if not low <= value <= high:
    raise ConfigError(f"{name} must be in [{low:,}, {high:,}], got {value!r}")


def _field_types(cls) -> dict[str, Any]:
  hints = typing.get_type_hints(cls)
  return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _is_dataclass_type(tp) -> bool:
  return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _coerce(value: Any, tp: Any, where: str) -> Any:
  """Converts a YAML/CLI value to the declared type, or raises ConfigError."""
  origin = typing.get_origin(tp)
  if tp is Any:
    return value
  if origin in (typing.Union, types.UnionType):
    args = typing.get_args(tp)
    if value is None and type(None) in args:
      return None
    errors = []
    for arg in args:
      if arg is type(None):
        continue
      try:
        return _coerce(value, arg, where)
      except ConfigError as e:
        errors.append(str(e))
    raise ConfigError(f"{where}: {value!r} fits none of {tp}")
  if _is_dataclass_type(tp):
    if isinstance(value, tp):
      return value
    if not isinstance(value, dict):
      raise ConfigError(f"{where}: expected a mapping for {tp.__name__}, got {value!r}")
    return from_dict(tp, value, where)
  if origin in (tuple, list):
    if isinstance(value, str):
      value = yaml.safe_load(value)
    if not isinstance(value, (list, tuple)):
      raise ConfigError(f"{where}: expected a list, got {value!r}")
    args = typing.get_args(tp)
    if origin is tuple and args and args[-1] is not Ellipsis:
      if len(args) != len(value):
        raise ConfigError(f"{where}: expected {len(args)} items, got {len(value)}")
      return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    item = args[0] if args else Any
    return tuple(_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value))
  if origin is dict:
    if isinstance(value, str):
      value = yaml.safe_load(value)
    if not isinstance(value, dict):
      raise ConfigError(f"{where}: expected a mapping, got {value!r}")
    _, vt = typing.get_args(tp) or (Any, Any)
    return {k: _coerce(v, vt, f"{where}.{k}") for k, v in value.items()}
  if origin is typing.Literal:
    if value not in typing.get_args(tp):
      raise ConfigError(f"{where}: {value!r} is not one of {typing.get_args(tp)}")
    return value
  if tp is bool:
    if isinstance(value, bool):
      return value
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
      return value.lower() in ("true", "1", "yes")
    raise ConfigError(f"{where}: expected true/false, got {value!r}")
  if tp is int:
    if isinstance(value, bool):
      raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if isinstance(value, int):
      return value
    if isinstance(value, float) and value.is_integer():
      return int(value)
    if isinstance(value, str):
      try:
        number = float(value)
        if number.is_integer():
          return int(number)
      except ValueError:
        pass
    raise ConfigError(f"{where}: expected an integer, got {value!r}")
  if tp is float:
    number = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
      number = float(value)
    elif isinstance(value, str):
      try:
        number = float(value)
      except ValueError:
        pass
    if number is None:
      raise ConfigError(f"{where}: expected a number, got {value!r}")
    # No field means anything by NaN or infinity: a NaN learning rate trains every weight to NaN and exits 0.
    if not math.isfinite(number):
      raise ConfigError(f"{where}: expected a finite number, got {value!r}")
    return number
  if tp is str:
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
      return str(value)
    raise ConfigError(f"{where}: expected a string, got {value!r}")
  return value


def from_dict(cls: type[T], data: dict[str, Any], where: str = "config") -> T:
  """Builds dataclass `cls` from a nested mapping; unknown keys are errors."""
  if data is None:
    data = {}
  ftypes = _field_types(cls)
  unknown = sorted(set(data) - set(ftypes))
  if unknown:
    raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; known keys: {', '.join(sorted(ftypes))}")
  kwargs = {k: _coerce(v, ftypes[k], f"{where}.{k}") for k, v in data.items()}
  try:
    return cls(**kwargs)
  except ConfigError:
    raise
  except (TypeError, ValueError) as e:  # __post_init__ invariant checks raise ValueError
    raise ConfigError(f"{where}: {e}") from None


def to_dict(config: Any) -> dict[str, Any]:
  """The nested plain-data form of a config (tuples become lists), for YAML/JSON."""

  def plain(v) -> Any:
    if dataclasses.is_dataclass(v):
      return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
    if isinstance(v, (list, tuple)):
      return [plain(x) for x in v]
    if isinstance(v, dict):
      return {k: plain(x) for k, x in v.items()}
    return v

  return plain(config)


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
  """Applies `a.b.c=value` overrides (values parsed as YAML) to a nested mapping.

  Setting the same key twice to different values is an error.
  """
  data = json.loads(json.dumps(data))  # deep copy of plain data
  seen: dict[str, Any] = {}
  for item in overrides:
    if "=" not in item:
      raise ConfigError(f"override {item!r} is not of the form key.path=value")
    key, raw = item.split("=", 1)
    key = key.strip().lstrip("-")
    value = yaml.safe_load(raw) if raw != "" else ""
    if key in seen and seen[key] != value:
      raise ConfigError(f"override {key} given twice with different values ({seen[key]!r}, {value!r})")
    seen[key] = value
    node = data
    parts = key.split(".")
    for p in parts[:-1]:
      node = node.setdefault(p, {})
      if not isinstance(node, dict):
        raise ConfigError(f"override {key}: {p} is not a section")
    node[parts[-1]] = value
  return data


def load(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None) -> T:
  """Loads `cls` from a YAML file (or defaults) plus dotted overrides."""
  data: dict[str, Any] = {}
  if path is not None:
    path = Path(path)
    if not path.is_file():
      raise ConfigError(f"config file {path} does not exist")
    try:
      data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
      raise ConfigError(f"config file {path} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
      raise ConfigError(f"config file {path} must hold a mapping at the top level")
  data = apply_overrides(data, list(overrides or []))
  return from_dict(cls, data, where=str(path) if path else "config")


def save(config: Any, path: str | Path) -> None:
  """Writes the resolved config as YAML."""
  Path(path).write_text(yaml.safe_dump(to_dict(config), sort_keys=False))
