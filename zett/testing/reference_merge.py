"""The recount-everything batch-level BPE merger: the reference the tests and `bench/dynamic_bpe.py` compare against."""

from __future__ import annotations

import collections
import re

NO_INTERNAL_WHITESPACE = re.compile(rb"[ \t\n\r\x0b\x0c]*[^ \t\n\r\x0b\x0c]*")


def reference_merge(
  pieces,
  starts_pretoken,
  *,
  max_merges=None,
  target_reduction=None,
  min_frequency=1,
  max_token_length=None,
  frozen=None,
):
  """Recounts every pair of the batch after every merge (the published reference's algorithm).

  Args:
    pieces: per example, list of token bytes.
    starts_pretoken: per example, list of bools (True = the token starts a pre-token).
    max_token_length: merge only where the result spans at most this many base tokens.
    frozen: per example, list of bools (True = never merged, e.g. a special token), or None.

  Returns:
    (merged pieces, spans [(start, end)], merges [(left, right)], stop reason)
  """
  # Each token: [bytes, pre-token group, start, end, frozen]
  seqs, group = [], 0
  for e, example in enumerate(pieces):
    seq = []
    for j, piece in enumerate(example):
      is_frozen = bool(frozen[e][j]) if frozen else False
      prev_frozen = bool(frozen[e][j - 1]) if frozen and j else False
      if j == 0 or starts_pretoken[e][j] or is_frozen or prev_frozen:
        group += 1
      seq.append((piece, group, j, j + 1, is_frozen))
    seqs.append(seq)
  num_base = sum(len(s) for s in seqs)
  limit = max_token_length or num_base + 1

  def mergeable(x, y):
    return (
      x[1] == y[1]
      and not x[4]
      and not y[4]
      and (x[3] - x[2]) + (y[3] - y[2]) <= limit
      and NO_INTERNAL_WHITESPACE.fullmatch(x[0] + y[0]) is not None
    )

  merges = []
  while True:
    if max_merges is not None and len(merges) >= max_merges:
      reason = "max_merges"
      break
    if target_reduction is not None and num_base - sum(len(s) for s in seqs) >= target_reduction * num_base:
      reason = "target_reduction"
      break
    counts = collections.Counter()
    for seq in seqs:
      for x, y in zip(seq, seq[1:]):
        if mergeable(x, y):
          counts[(x[0], y[0])] += 1
    if not counts:
      reason = "no_pairs"
      break
    best = min(counts, key=lambda pair: (-counts[pair], pair))
    if counts[best] < min_frequency:
      reason = "min_frequency"
      break
    merges.append(best)
    new_seqs = []
    for seq in seqs:
      out, j = [], 0
      while j < len(seq):
        if j + 1 < len(seq) and (seq[j][0], seq[j + 1][0]) == best and mergeable(seq[j], seq[j + 1]):
          out.append((best[0] + best[1], seq[j][1], seq[j][2], seq[j + 1][3], False))
          j += 2
        else:
          out.append(seq[j])
          j += 1
      new_seqs.append(out)
    seqs = new_seqs
  return ([[t[0] for t in s] for s in seqs], [[(t[2], t[3]) for t in s] for s in seqs], merges, reason)
