"""Token-by-token decoding for streaming (/v1/generate), on the one decoder (`zett.models.decoding`).

Each `next()` of a decoding runs one device call, so the service streams every token as soon as it is back (it runs
them in a worker thread). The decoder buckets prompt and cache shapes, so a long-lived server compiles few programs.
"""

from __future__ import annotations

from collections.abc import Iterator

from zett.models.decoding import PREFILL_CHUNK, Decoder, Sampling

__all__ = ["PREFILL_CHUNK", "Generator", "LargeVocabularyDecoder"]


class Generator:
  """Greedy or sampled decoding of a causal base model (`zett.models.base.BaseModel`)."""

  def __init__(self, model):
    self.decoder = Decoder(model)

  def decode(
    self,
    prompt_ids: list[int],
    max_new_tokens: int,
    temperature: float = 0.0,
    seed: int = 0,
    stop_ids: frozenset[int] = frozenset(),
  ) -> Iterator[int]:
    """Yields up to `max_new_tokens` token ids; stops after yielding one of `stop_ids`."""
    state = self.decoder.prefill(ids=[prompt_ids], new_tokens=max_new_tokens)
    for tokens in self.decoder.decode(state, max_new_tokens, Sampling(temperature, seed), stop_ids=stop_ids):
      yield int(tokens[0])


class LargeVocabularyDecoder:
  """Generation with a large vocabulary built by `zett.ann.build` (next tokens through the ANN index).

  The prompt is tokenized with the large vocabulary itself, as `zett.ann.generate` does.
  """

  def __init__(self, model, vocab_dir):
    from zett.ann.generate import LargeVocabGenerator

    self.generator = LargeVocabGenerator(model, vocab_dir)
    self.tokenizer = self.generator.tokenizer

  def steps(
    self, prompt: str, max_new_tokens: int, temperature: float = 0.0, seed: int = 0, stop_at_eos: bool = True
  ) -> Iterator[tuple[int, bytes]]:
    """Yields (large-vocabulary id, token bytes) per generated token."""
    prompt_ids = self.tokenizer.encode(prompt)
    bos = self.tokenizer.roles.get("bos")
    if self.tokenizer.add_bos and bos is not None:
      prompt_ids = [bos] + prompt_ids
    for token, _ in self.generator.generate_ids(
      prompt_ids, max_new_tokens, temperature=temperature, seed=seed, stop_at_eos=stop_at_eos
    ):
      yield token, self.tokenizer.vocab_bytes[token]
