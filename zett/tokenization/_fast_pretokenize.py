"""Compiled twin of the sampler's regex pre-tokenizer + word counting (`_substrings.pretokenize`).

Both splits the sampler draws from (`_substrings.PRETOKEN_PATTERNS`: GPT-2's and cl100k's) are a handful of
character-class runs, so they are scanned directly over code points; each code point's class is read off the `regex`
module itself, so both paths agree on what a letter, number or space is. `regex.findall` + a Counter were the
largest cost of a multilingual batch.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import regex

from zett.tokenization._fast import _jit, _table_bits

# -- pre-tokenization --------------------------------------------------------------------------------

_OTHER, _LETTER, _NUMBER, _SPACE = 0, 1, 2, 3


@functools.cache
def _classes() -> np.ndarray:
  """uint8 [0x110000]: each code point's class for the pre-token pattern, as `regex` itself sees it."""
  everything = "".join(map(chr, range(0x110000)))
  table = np.zeros(0x110000, dtype=np.uint8)  # _OTHER: [^\s\p{L}\p{N}]
  for value, pattern in ((_LETTER, r"\p{L}+"), (_NUMBER, r"\p{N}+"), (_SPACE, r"\s+")):
    for match in regex.finditer(pattern, everything):
      table[match.start() : match.end()] = value
  return table


@_jit
def _run(points, classes, i, end, value):
  while i < end and classes[points[i]] == value:
    i += 1
  return i


@_jit
def _fold(c, ignore_case):
  """c as the contraction alternatives compare it: ASCII-lowercased under (?i), where LONG S also folds to "s"."""
  if not ignore_case:
    return c
  if c == 0x17F:
    return 115
  return c + 32 if 65 <= c <= 90 else c


@_jit
def _contraction_end(points, i, end, ignore_case):
  """End of 's 't 're 've 'm 'll 'd at i, or -1."""
  if points[i] != 39 or i + 1 >= end:
    return -1
  d = _fold(points[i + 1], ignore_case)
  if d == 115 or d == 116 or d == 109 or d == 100:
    return i + 2
  if i + 2 < end:
    e = _fold(points[i + 2], ignore_case)
    if (d == 114 and e == 101) or (d == 118 and e == 101) or (d == 108 and e == 108):
      return i + 3
  return -1


@_jit
def _space_end(i, j, end):
  r"""`\s+(?!\S)|\s+` over the whitespace run [i, j): all of it at the end of the text or when it is one character,
  else all but its last space, which leads the next pre-token."""
  return j if j == end or j - i < 2 else j - 1


@_jit
def _next_pretoken(points, classes, i, end):
  """End of the pre-token at i under GPT-2's pattern (`_substrings.PRETOKEN_PATTERN`), alternatives in its order."""
  j = _contraction_end(points, i, end, False)
  if j >= 0:
    return j
  c = points[i]
  kind = classes[c]
  if c == 32 and i + 1 < end and classes[points[i + 1]] != _SPACE:  # ' ?' before a letter/number/other run
    return _run(points, classes, i + 2, end, classes[points[i + 1]])
  if kind != _SPACE:
    return _run(points, classes, i + 1, end, kind)
  return _space_end(i, _run(points, classes, i + 1, end, _SPACE), end)


@_jit
def _is_newline(c):
  return c == 10 or c == 13


@_jit
def _next_pretoken_cl100k(points, classes, i, end):
  """End of the pre-token at i under cl100k's pattern (`_formats.CL100K_PATTERN`), alternatives in its order."""
  j = _contraction_end(points, i, end, True)  # (?i:'s|'t|'re|'ve|'m|'ll|'d)
  if j >= 0:
    return j
  c = points[i]
  kind = classes[c]
  if kind == _LETTER:  # [^\r\n\p{L}\p{N}]?\p{L}+ without its lead
    return _run(points, classes, i + 1, end, _LETTER)
  if kind != _NUMBER and not _is_newline(c) and i + 1 < end and classes[points[i + 1]] == _LETTER:
    return _run(points, classes, i + 2, end, _LETTER)  # ... with one lead: "(self", " self", ".get"
  if kind == _NUMBER:  # \p{N}{1,3}
    return min(_run(points, classes, i + 1, end, _NUMBER), i + 3)
  j = -1
  if kind == _OTHER:  # ' ?[^\s\p{L}\p{N}]+[\r\n]*'
    j = _run(points, classes, i + 1, end, _OTHER)
  elif c == 32 and i + 1 < end and classes[points[i + 1]] == _OTHER:
    j = _run(points, classes, i + 2, end, _OTHER)
  if j >= 0:
    while j < end and _is_newline(points[j]):
      j += 1
    return j
  j = _run(points, classes, i + 1, end, _SPACE)
  for k in range(j - 1, i - 1, -1):  # \s*[\r\n]+: up to the run's last newline
    if _is_newline(points[k]):
      return k + 1
  return _space_end(i, j, end)


@_jit
def _pretokenize(points, text_ends, classes, cl100k):
  """Pre-tokens of every text, deduplicated: (word of each pre-token, first occurrence, length, count)."""
  size = points.size
  bits = _table_bits(size, 2)
  mask = (1 << bits) - 1
  table = np.full(1 << bits, -1, dtype=np.int32)
  word_of = np.empty(size, dtype=np.int64)
  starts = np.empty(size, dtype=np.int64)
  lengths = np.empty(size, dtype=np.int64)
  counts = np.zeros(size, dtype=np.int64)
  hashes = np.empty(size, dtype=np.uint64)
  golden = np.uint64(0x9E3779B97F4A7C15)
  shift = np.uint64(64 - bits)
  token_ends = np.empty(text_ends.size, dtype=np.int64)
  tokens = words = 0
  begin = 0
  for t in range(text_ends.size):
    end = text_ends[t]
    i = begin
    while i < end:
      j = _next_pretoken_cl100k(points, classes, i, end) if cl100k else _next_pretoken(points, classes, i, end)
      h = np.uint64(j - i)
      for k in range(i, j):
        h = h * np.uint64(0x100000001B3) + np.uint64(points[k])
      slot = np.int64((h * golden) >> shift)
      while True:
        word = table[slot]
        if word < 0:
          word = words
          table[slot] = word
          starts[word], lengths[word], hashes[word] = i, j - i, h
          words += 1
          break
        if hashes[word] == h and lengths[word] == j - i:
          same = True
          for k in range(j - i):
            if points[starts[word] + k] != points[i + k]:
              same = False
              break
          if same:
            break
        slot = (slot + 1) & mask
      counts[word] += 1
      word_of[tokens] = word
      tokens += 1
      i = j
    begin = end
    token_ends[t] = tokens
  return word_of[:tokens], starts[:words], lengths[:words], counts[:words], token_ends


@_jit
def _utf8(points, starts, lengths):
  """UTF-8 bytes of the words (code point runs), concatenated, and each word's byte length."""
  total = 0
  for w in range(starts.size):
    for k in range(starts[w], starts[w] + lengths[w]):
      c = points[k]
      total += 1 if c < 0x80 else 2 if c < 0x800 else 3 if c < 0x10000 else 4
  codes = np.empty(total, dtype=np.uint8)
  byte_lengths = np.empty(starts.size, dtype=np.int64)
  n = 0
  for w in range(starts.size):
    first = n
    for k in range(starts[w], starts[w] + lengths[w]):
      c = points[k]
      if c < 0x80:
        codes[n] = c
        n += 1
      elif c < 0x800:
        codes[n], codes[n + 1] = 0xC0 | (c >> 6), 0x80 | (c & 0x3F)
        n += 2
      elif c < 0x10000:
        codes[n], codes[n + 1], codes[n + 2] = 0xE0 | (c >> 12), 0x80 | ((c >> 6) & 0x3F), 0x80 | (c & 0x3F)
        n += 3
      else:
        codes[n], codes[n + 1] = 0xF0 | (c >> 18), 0x80 | ((c >> 12) & 0x3F)
        codes[n + 2], codes[n + 3] = 0x80 | ((c >> 6) & 0x3F), 0x80 | (c & 0x3F)
        n += 4
    byte_lengths[w] = n - first
  return codes, byte_lengths


def pretokenize(texts: Sequence[str], pattern: str = "gpt2"):
  """Compiled pre-tokenization + word counting, as `_substrings.pretokenize` (a `PRETOKEN_PATTERNS` name).

  Returns (UTF-8 bytes of the distinct words in first-occurrence order, their byte lengths, their
  counts, the word of every pre-token in text order, cumulative pre-tokens per text), or None for text the
  compiled path leaves to the reference (lone surrogates, which UTF-8 cannot encode).
  """
  try:
    points = np.frombuffer("".join(texts).encode("utf-32-le"), dtype=np.uint32)
  except UnicodeEncodeError:
    return None
  text_ends = np.cumsum(np.fromiter(map(len, texts), dtype=np.int64, count=len(texts)))
  if pattern not in ("gpt2", "cl100k"):
    raise ValueError(f"no compiled pre-tokenizer for {pattern!r}")
  word_of, starts, lengths, counts, token_ends = _pretokenize(points, text_ends, _classes(), pattern == "cl100k")
  codes, byte_lengths = _utf8(points, starts, lengths)
  return codes, byte_lengths, counts, word_of, token_ends
