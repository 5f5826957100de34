"""Surface forms the way the ZeTT authors made them, for their published hypernetworks.

Their `zett.utils.get_surface_form_matrix` (github.com/bminixhofer/zett) spells each target token, written in the
GPT-2 byte alphabet, with the *model* of the byte-level base tokenizer saved beside the hypernetwork
(`hn_tokenizer._tokenizer.model.tokenize(token)`: no normalizer, no pre-tokenizer), keeps the first
`hn_surface_maxlen` ids (truncation from the right), and pads with the tokenizer's pad id; a special token is the
single id of that special token. That tokenizer keeps the base ids and appends its extra tokens (bytes and merges the
base lacks) after them, which the hypernetwork embeds from its fallback table.

Differences from their script, on purpose: the target tokenizer is used as given (their script first rewrote it with
`convert_to_byte_level(make_whitespace_consistent=True)`, which renames tokens of several whitespace characters to
unused placeholders); padding is carried by lengths instead of the pad id; target special tokens map to base special
tokens by role or content, as everywhere else in zett.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tokenizers

from zett.tokenization.byte_level import to_byte_level
from zett.tokenization.surface import SurfaceForms, pack_rows, surface_forms


def spell_like_zett_authors(target, tokenizer_json: str | Path, max_length: int, base_vocab_size: int) -> SurfaceForms:
  """Spellings of every token of `target` (a zett `Tokenizer`) in the ids of their byte-level base tokenizer.

  Args:
    target: the target tokenizer.
    tokenizer_json: the byte-level base tokenizer stored beside the hypernetwork.
    max_length: hn_surface_maxlen.
    base_vocab_size: original_vocab_size; a special token whose id is not below it has no base row to copy and is
      predicted instead.
  """
  from zett.tokenization import load_tokenizer

  speller = load_tokenizer(str(tokenizer_json))
  forms = surface_forms(target, speller, max_length=max_length)  # for the special-token mapping
  model_only = tokenizers.Tokenizer(speller.backend.model)
  vocab_bytes = target.vocab_bytes
  special = forms.special_base_ids.copy()
  rows = [i for i in range(target.vocab_size) if special[i] < 0 and i not in target.special_ids and vocab_bytes[i]]
  encodings = model_only.encode_batch_fast([to_byte_level(vocab_bytes[i]) for i in rows], add_special_tokens=False)
  ids, lengths, truncated = pack_rows([e.ids for e in encodings], max_length)
  surface_ids, surface_lengths = forms.ids.copy(), forms.lengths.copy()
  surface_ids[rows], surface_lengths[rows] = ids, lengths
  special[special >= base_vocab_size] = -1
  unknown = 0 if speller.roles.get("unk") is None else int((ids == speller.roles["unk"]).any(axis=1).sum())
  return SurfaceForms(
    ids=surface_ids,
    lengths=surface_lengths,
    special_base_ids=special.astype(np.int32),
    num_truncated=truncated,
    num_unknown=unknown,
  )
