"""Small byte-level BPE tokenizers trained in memory, the way every test and offline demo builds one."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def train_byte_level_bpe(texts: Iterable[str], vocab_size: int, special_tokens: Sequence[str] = ()):
  """A `tokenizers.Tokenizer`: byte-level BPE (GPT-2 style, no prefix space) trained on `texts`.

  The 256 byte symbols are always in the vocabulary, so any text encodes; `special_tokens` take the first ids.
  Training is deterministic for the same texts and arguments.
  """
  import tokenizers
  from tokenizers import decoders, models, pre_tokenizers, trainers

  backend = tokenizers.Tokenizer(models.BPE())
  backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  backend.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(
    vocab_size=vocab_size,
    special_tokens=list(special_tokens),
    show_progress=False,
    initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
  )
  backend.train_from_iterator(texts, trainer)
  return backend
