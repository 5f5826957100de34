"""Fixtures shared by the test files; what they build comes from `zett.testing`, which benchmarks can use too."""

from __future__ import annotations

import pytest

from zett.stdlib_source import stdlib_text
from zett.testing.bpe import train_byte_level_bpe


@pytest.fixture(scope="session")
def textwrap_bpe():
  """`textwrap_bpe(vocab_size, special_tokens=())`: a byte-level BPE `tokenizers.Tokenizer` trained on textwrap.py.

  Built once per (vocab_size, special_tokens) in a session.
  """
  built = {}

  def build(vocab_size: int, special_tokens: tuple[str, ...] = ()):
    key = (vocab_size, tuple(special_tokens))
    if key not in built:
      built[key] = train_byte_level_bpe([stdlib_text(("textwrap.py",))], vocab_size, special_tokens)
    return built[key]
  return build
