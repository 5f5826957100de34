"""The root of zett's errors: a failure zett expected and can explain, as opposed to a bug.

Every error class of `zett`, `hypernet` and `train` derives from `ZettError`. Its message names the file, flag or
setting at fault and what to do, so the CLI prints it as one line (exit code 2); any other exception is a bug and
keeps its traceback.

`ZettError` itself subclasses only `Exception`. The classes below it keep the builtin base they had before the root
existed (most are `ValueError`s, `MissingAssetError` a `FileNotFoundError`, `UnknownJobError` a `KeyError`), so
callers and tests that catch those builtins keep working.
"""

from __future__ import annotations


class ZettError(Exception):
  """An expected failure with a message that names what is wrong (a user's file, flag or setting, a run's state)."""


class UsageError(ZettError, ValueError):
  """Command-line flags that cannot work as given, or together; the message names the flag."""
