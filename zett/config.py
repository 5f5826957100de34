"""The one config system: frozen dataclasses, loaded from YAML, overridden by dotted CLI keys.

Unknown keys and malformed overrides are errors, raised before anything is compiled.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import json
import math
import textwrap
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


def check_range(
  name: str, value: float, low: float, high: float, *, low_open: bool = False, high_open: bool = False
) -> None:
  """Raises ConfigError naming `name` and the allowed range unless `value` lies between low and high (inclusive,
  or excluded at an end marked open) (for `__post_init__`)."""
  inside = (low < value if low_open else low <= value) and (value < high if high_open else value <= high)
  if not inside:
    interval = f"{'(' if low_open else '['}{low:,}, {high:,}{')' if high_open else ']'}"
    raise ConfigError(f"{name} must be in {interval}, got {value!r}")


def bounded(
  default: Any,
  low: float,
  high: float,
  *,
  low_open: bool = False,
  high_open: bool = False,
  metadata: dict[str, Any] | None = None,
) -> Any:
  """A dataclass field with an allowed range, kept in its metadata (`range`: low, high, low_open, high_open) where
  `check_ranges` and the command line (`zett.cli`) read it; `metadata` adds other entries. None, where the field
  allows it, is always allowed."""
  return dataclasses.field(default=default, metadata={**(metadata or {}), "range": (low, high, low_open, high_open)})


def check_ranges(config: Any, prefix: str = "") -> None:
  """`check_range` on every field of dataclass instance `config` declared with `bounded` (for `__post_init__`)."""
  for field in dataclasses.fields(config):
    value = getattr(config, field.name)
    if "range" in field.metadata and value is not None:
      low, high, low_open, high_open = field.metadata["range"]
      check_range(prefix + field.name, value, low, high, low_open=low_open, high_open=high_open)


def field_docs(cls: type) -> dict[str, str]:
  """The attribute docstrings of dataclass `cls`: for each field, the string literal right after it in the class
  body (inherited fields too), whitespace collapsed to single spaces. Fields without one are absent."""
  docs: dict[str, str] = {}
  for klass in reversed(cls.__mro__):  # a subclass's docstring wins over its base's
    if not dataclasses.is_dataclass(klass):
      continue
    try:
      tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
    except (OSError, TypeError):  # no source (built in a REPL, or a frozen install): no docs, not an error
      continue
    body = next(node for node in tree.body if isinstance(node, ast.ClassDef)).body
    for node, after in zip(body, body[1:]):
      if (
        isinstance(node, ast.AnnAssign)
        and isinstance(node.target, ast.Name)
        and isinstance(after, ast.Expr)
        and isinstance(after.value, ast.Constant)
        and isinstance(after.value.value, str)
      ):
        docs[node.target.id] = " ".join(after.value.value.split())
  names = {field.name for field in dataclasses.fields(cls)}
  return {name: doc for name, doc in docs.items() if name in names}


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


def apply_overrides(data: dict[str, Any], overrides: list[str], values: dict[str, Any] | None = None) -> dict[str, Any]:
  """Applies `a.b.c=value` overrides (values parsed as YAML) to a nested mapping, then `values` (dotted key -> a
  value already parsed, such as a command-line flag's).

  Setting the same key twice to different values, by either, is an error.
  """
  data = json.loads(json.dumps(data))  # deep copy of plain data
  items: list[tuple[str, Any]] = []
  for item in overrides:
    if "=" not in item:
      raise ConfigError(f"override {item!r} is not of the form key.path=value")
    key, raw = item.split("=", 1)
    key = key.strip().lstrip("-")
    try:
      items.append((key, yaml.safe_load(raw) if raw != "" else ""))
    except yaml.YAMLError:
      raise ConfigError(f"override {key}: {raw!r} is not a YAML value (quote it?)") from None
  items.extend((values or {}).items())
  seen: dict[str, Any] = {}
  for key, value in items:
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


def load(
  cls: type[T],
  path: str | Path | None = None,
  overrides: list[str] | None = None,
  values: dict[str, Any] | None = None,
) -> T:
  """Loads `cls` from a YAML file (or defaults) plus dotted overrides, then `values` (see `apply_overrides`)."""
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
  data = apply_overrides(data, list(overrides or []), values)
  return from_dict(cls, data, where=str(path) if path else "config")


def save(config: Any, path: str | Path) -> None:
  """Writes the resolved config as YAML."""
  Path(path).write_text(yaml.safe_dump(to_dict(config), sort_keys=False))
