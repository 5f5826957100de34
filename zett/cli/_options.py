"""The option layer every command shares: its options are one frozen dataclass, filled from three places.

- `--config FILE.yaml`: a mapping of the dataclass's fields (nested dataclasses as nested mappings);
- flags: each scalar field (str, int, float, bool, each optionally None) is the flag `--field-name`; a bool field
  that defaults to True is `--no-field-name`; `option(flag=...)` renames a flag, `option(flag="")` drops it;
- `KEY=VALUE` arguments (or `--set KEY=VALUE`): any field, dotted keys into nested ones (`index.kind=hnsw`), the
  value parsed as YAML.

Precedence: the dataclass's defaults, then the `--config` file, then the command line; a flag and a `KEY=VALUE`
that set one field to different values are an error, as is a key set twice. `--help` shows each field's docstring
(`zett.config.field_docs`) beside its flag, and lists the keys without a flag after the flags.

A number field gets its flag only when it declares its range (`option(low=..., high=...)`, i.e.
`zett.config.bounded`): the flag is checked as it is parsed, and the message names the flag. The options class's
`__post_init__` calls `zett.config.check_ranges`, so a value from the file or a `KEY=VALUE` is checked too.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
import textwrap
import types
import typing
from typing import Any

from zett import config as config_lib
from zett.errors import UsageError

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*=")  # `KEY=VALUE` (a path like runs/a=b/x is not one)
_COMMON = ("config", "set", "debug", "arguments")  # namespace names the layer itself uses


def option(
  default: Any = None,
  *,
  low: float | None = None,
  high: float | None = None,
  low_open: bool = False,
  high_open: bool = False,
  required: bool = False,
  positional: bool = False,
  flag: str | None = None,
  choices: tuple[str, ...] | None = None,
  metavar: str | None = None,
) -> Any:
  """A field of a command's options with what the command line needs to know about it.

  Args:
    default: its value when nothing sets it (None for a required field).
    low, high, low_open, high_open: its allowed range (`zett.config.bounded`); number fields need one for a flag.
    required: the command cannot run without it (from a flag, the file or a `KEY=VALUE`).
    positional: it collects the command's bare arguments (a tuple[str, ...] field, e.g. `zett eval MODEL ...`).
    flag: the flag's name when not `--field-name`; "" for none.
    choices: the values it takes (its `__post_init__` checks them too).
    metavar: how `--help` shows its value.
  """
  wanted = {"required": required, "positional": positional, "choices": choices, "metavar": metavar}
  metadata: dict[str, Any] = {key: value for key, value in wanted.items() if value}
  if flag is not None:
    metadata["flag"] = flag
  if low is None or high is None:
    return dataclasses.field(default=default, metadata=metadata)
  return config_lib.bounded(default, low, high, low_open=low_open, high_open=high_open, metadata=metadata)


def int_range(low: int, high: int):
  """An argparse `type` accepting integers in [low, high]; anything else is a one-line usage error."""

  def parse(text: str) -> int:
    try:
      value = int(text)
    except ValueError:
      value = None
    if value is None or not low <= value <= high:
      raise argparse.ArgumentTypeError(f"must be an integer from {low:,} to {high:,}, got {text!r}")
    return value

  return parse


def float_range(low: float, high: float, low_open: bool = False, high_open: bool = False):
  """An argparse `type` accepting finite numbers in the interval from `low` to `high` (ends open when asked)."""
  interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"

  def parse(text: str) -> float:
    try:
      value = float(text)
    except ValueError:
      value = math.nan
    inside = (
      math.isfinite(value)
      and (low < value if low_open else low <= value)
      and (value < high if high_open else value <= high)
    )
    if not inside:
      raise argparse.ArgumentTypeError(f"must be a finite number in {interval}, got {text!r}")
    return value

  return parse


def _scalar(tp: Any) -> Any:
  """The flag's value type for field type `tp`: str, int, float or bool (also as `X | None`); None for others."""
  if typing.get_origin(tp) in (typing.Union, types.UnionType):
    rest = [arg for arg in typing.get_args(tp) if arg is not type(None)]
    return _scalar(rest[0]) if len(rest) == 1 else None
  return tp if tp in (str, int, float, bool) else None


@dataclasses.dataclass(frozen=True)
class _Flag:
  field: dataclasses.Field
  name: str  # --flag-name
  kind: Any  # str, int, float or bool


def _flags(cls: type) -> list[_Flag]:
  hints = typing.get_type_hints(cls)
  flags = []
  for field in dataclasses.fields(cls):
    if field.name in _COMMON:
      raise TypeError(f"{cls.__name__}.{field.name}: the command line uses that name itself")
    kind = _scalar(hints[field.name])
    if field.metadata.get("flag") == "" or field.metadata.get("positional") or kind is None:
      continue
    if kind in (int, float) and "range" not in field.metadata:
      continue  # a number without a declared range is a key only (its flag would go unchecked)
    dashed = field.name.replace("_", "-")
    name = field.metadata.get("flag") or (f"--no-{dashed}" if kind is bool and field.default is True else f"--{dashed}")
    flags.append(_Flag(field, name, kind))
  return flags


def _positional(cls: type) -> dataclasses.Field | None:
  return next((f for f in dataclasses.fields(cls) if f.metadata.get("positional")), None)


def _flag_type(flag: _Flag):
  if flag.kind is str:
    return str
  low, high, low_open, high_open = flag.field.metadata["range"]
  if flag.kind is int:
    return int_range(int(low) + low_open, int(high) - high_open)
  return float_range(low, high, low_open, high_open)


def _help(doc: str, default: Any = None) -> str:
  shown = doc or "(undocumented)"
  if default not in (None, "", ()) and not isinstance(default, bool) and not dataclasses.is_dataclass(default):
    shown += f" (default: {default})"
  return shown.replace("%", "%%")  # argparse %-formats help text


def keys(cls: type, prefix: str = "") -> list[tuple[str, str, Any]]:
  """(dotted key, docstring, default) of every non-dataclass field of `cls`, nested dataclasses walked."""
  hints = typing.get_type_hints(cls)
  docs = config_lib.field_docs(cls)
  found = []
  for field in dataclasses.fields(cls):
    tp = hints[field.name]
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
      found += keys(tp, f"{prefix}{field.name}.")
    else:
      default = None if field.default is dataclasses.MISSING else field.default
      found.append((prefix + field.name, docs.get(field.name, ""), default))
  return found


def _keys_epilog(title: str, entries: list[tuple[str, str, Any]]) -> str:
  lines = [title]
  for key, doc, default in entries:
    lines.append(
      f"  {key}: {doc or '(undocumented)'}" + ("" if default in (None, "", ()) else f" (default: {default})")
    )
  return "\n".join(lines)


class _Formatter(argparse.HelpFormatter):
  """Wraps each line of the description and epilog on its own, so the key listing keeps one entry per line."""

  def _fill_text(self, text, width, indent):
    lines = []
    for line in text.splitlines():
      lead = line[: len(line) - len(line.lstrip())]
      more = "    " if lead else ""
      lines += textwrap.wrap(line.strip(), width, initial_indent=indent + lead, subsequent_indent=indent + lead + more)
    return "\n".join(lines)


def add_options(
  parser: argparse.ArgumentParser,
  cls: type,
  *,
  config_help: str | None = None,
  arguments: tuple[str, str] | None = None,
  keys_of: type | None = None,
) -> None:
  """Adds `cls`'s flags, `--config`, `--set`, `--debug` and the bare `KEY=VALUE` arguments to `parser`.

  Args:
    parser: the command's parser.
    cls: the command's options dataclass.
    config_help: the `--config` help, where the file holds something else than `cls` (`zett train`).
    arguments: (metavar, help) of the bare arguments, where they take more than `KEY=VALUE`s (`zett train`).
    keys_of: the dataclass the file and `KEY=VALUE` fill, where it is not `cls` (`zett train`).
  """
  parser.formatter_class = _Formatter
  docs = config_lib.field_docs(cls)
  flags = _flags(cls)
  for flag in flags:
    field = flag.field
    default = None if field.default is dataclasses.MISSING else field.default
    kwargs: dict[str, Any] = {"dest": field.name, "default": None, "help": _help(docs.get(field.name, ""), default)}
    if flag.kind is bool:
      kwargs.update(action="store_const", const=not field.default)
      if field.default is True:
        kwargs["help"] = f"turns this off: {kwargs['help']}"
    else:
      kwargs.update(type=_flag_type(flag), metavar=field.metadata.get("metavar") or field.name.upper())
      if field.metadata.get("choices"):
        kwargs.update(choices=field.metadata["choices"], metavar=None)
      if field.metadata.get("required"):
        kwargs["help"] += " [required]"
    parser.add_argument(flag.name, **kwargs)
  positional = _positional(cls)
  flagged = {flag.field.name for flag in flags} | ({positional.name} if positional else set())
  key_only = [entry for entry in keys(cls) if entry[0] not in flagged]
  parser.add_argument(
    "--config",
    metavar="FILE.yaml",
    help=config_help
    or "YAML file of these options (keys: the flags' names with _ for -"
    + (", and the options listed below)" if key_only else ")"),
  )
  parser.add_argument(
    "--set", action="append", default=[], metavar="KEY=VALUE", help="the same as a bare KEY=VALUE (repeatable)"
  )
  parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
  if arguments is None:
    what = "KEY=VALUE sets any option, dotted keys reach nested sections (the value is YAML: 3, true, [a, b], null)"
    if positional is None:
      arguments = ("KEY=VALUE", what)
    else:
      metavar = positional.metadata.get("metavar") or positional.name.upper()
      arguments = (f"{metavar}|KEY=VALUE", f"{docs.get(positional.name, '')} {what}")
  parser.add_argument("arguments", nargs="*", metavar=arguments[0], help=arguments[1].replace("%", "%%"))
  if keys_of is None:
    if key_only:
      parser.epilog = _keys_epilog("options without a flag (KEY=VALUE, or in --config):", key_only)
  else:
    parser.epilog = _keys_epilog(f"keys of {keys_of.__name__} (KEY=VALUE, or in the config file):", keys(keys_of))


def split_arguments(arguments: list[str]) -> tuple[list[str], list[str]]:
  """The bare arguments as (KEY=VALUE overrides, the others)."""
  overrides = [a for a in arguments if _KEY.match(a)]
  return overrides, [a for a in arguments if not _KEY.match(a)]


def flag_values(cls: type, args: argparse.Namespace) -> dict[str, Any]:
  """The fields of `cls` the command line's flags set: {field name: value}."""
  return {
    flag.field.name: getattr(args, flag.field.name)
    for flag in _flags(cls)
    if getattr(args, flag.field.name, None) is not None
  }


def load_options(cls: type, args: argparse.Namespace) -> Any:
  """`cls` from `--config`, the flags and the `KEY=VALUE`s of parsed `args` (see the module docstring)."""
  overrides, rest = split_arguments(getattr(args, "arguments", []))
  values = flag_values(cls, args)
  positional = _positional(cls)
  if positional is not None and rest:
    values[positional.name] = tuple(rest)
  elif rest:
    raise UsageError(f"unrecognized arguments: {' '.join(rest)} (options are --flags and KEY=VALUE)")
  options = config_lib.load(cls, getattr(args, "config", None), [*getattr(args, "set", []), *overrides], values)
  flag_names = {flag.field.name: flag.name for flag in _flags(cls)}
  for field in dataclasses.fields(cls):
    if field.metadata.get("required") and getattr(options, field.name) in (None, "", ()):
      name = field.name
      if field.metadata.get("positional"):
        how = f"give {field.metadata.get('metavar') or name.upper()} arguments (or {name}: [...] in --config)"
      else:
        how = f"give {flag_names[name] + ', ' if name in flag_names else ''}{name}=VALUE or {name}: in --config"
      raise UsageError(f"{name} is required: {how}")
  return options
