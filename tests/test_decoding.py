"""The one decoder (zett.models.decoding): against uncached full forward passes, ids vs embeddings, stops, sampling."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zett.models.decoding import PREFILL_CHUNK, Decoder, DecodingError, Greedy, Sampling, greedy_generate
from zett.testing.tiny import tiny_llama


@pytest.fixture(scope="module")
def model():
  return tiny_llama(vocab_size=256, hidden_size=64)


def _uncached_greedy(model, ids: list[int], steps: int) -> list[int]:
  ids = list(ids)
  forward = jax.jit(lambda params, x: model.module.apply({"params": params}, input_ids=x).logits)
  width = 128
  for _ in range(steps):
    logits = forward(model.params, jnp.asarray([ids + [0] * (width - len(ids))]))
    ids.append(int(jnp.argmax(logits[0, len(ids) - 1])))
  return ids


@pytest.mark.parametrize("length", [5, PREFILL_CHUNK + 7], ids=["one-chunk", "two-chunks"])
def test_greedy_equals_uncached_decoding_and_embeddings_equal_ids(model, length):
  prompt = list(np.random.default_rng(length).integers(3, 256, length))
  want = _uncached_greedy(model, prompt, 6)[-6:]
  assert greedy_generate(model, [prompt], max_new_tokens=6)[0].tolist() == want
  # The same prompt fed as its embedding rows, and each chosen token as its row: what a transferred or large
  # vocabulary does.
  decoder = Decoder(model)
  rows = np.asarray(model.embeddings.input)
  state = decoder.prefill(embeds=rows[np.asarray([prompt])], new_tokens=6)
  got = [int(t[0]) for t in decoder.decode(state, 6, embed=lambda ids: rows[ids])]
  assert got == want


def test_left_padded_batch_rows_decode_as_alone(model):
  short, long = [5, 6, 7], [9, 10, 11, 12, 13, 14, 15]
  ids = np.zeros((2, len(long)), np.int32)
  mask = np.zeros_like(ids)
  ids[0, -len(short) :], mask[0, -len(short) :] = short, 1
  ids[1], mask[1] = long, 1
  batch = greedy_generate(model, ids, mask, max_new_tokens=5)
  assert batch[0].tolist() == greedy_generate(model, [short], max_new_tokens=5)[0].tolist()
  assert batch[1].tolist() == greedy_generate(model, [long], max_new_tokens=5)[0].tolist()


def test_a_row_that_stops_repeats_its_stop_token_and_decoding_ends_when_all_have(model):
  prompts = [[5, 6, 7], [8, 9, 10]]
  free = greedy_generate(model, prompts, max_new_tokens=8)
  stop = int(free[0, 1])  # row 0 emits it at step 1
  got = greedy_generate(model, prompts, max_new_tokens=8, eos_token_id=stop)
  assert got[0, 1] == stop and (got[0, 1:] == stop).all()
  row1_stops = np.flatnonzero(free[1] == stop)
  if row1_stops.size:  # decoding ends at the later row's stop
    assert got.shape[1] == max(2, row1_stops[0] + 1)
  else:
    assert got.shape[1] == 8 and got[1].tolist() == free[1].tolist()


def test_sampling_is_reproducible_from_its_seed_and_greedy_at_temperature_zero(model):
  decoder = Decoder(model)

  def run(choose):
    return [int(t[0]) for t in decoder.decode(decoder.prefill(ids=[[5, 6, 7]], new_tokens=12), 12, choose)]

  hot = run(Sampling(5.0, seed=1))
  assert hot == run(Sampling(5.0, seed=1))
  assert hot != run(Sampling(5.0, seed=2))
  assert run(Sampling(0.0, seed=3)) == run(Greedy())


def test_clear_errors(model):
  decoder = Decoder(model)
  with pytest.raises(DecodingError, match="no tokens"):
    decoder.prefill(ids=np.zeros((1, 0), np.int32), new_tokens=1)
  with pytest.raises(DecodingError, match="row has no tokens"):
    decoder.prefill(ids=[[1, 2]], mask=[[0, 0]], new_tokens=1)
  state = decoder.prefill(ids=[[1, 2]], new_tokens=1)
  with pytest.raises(DecodingError, match="do not fit"):
    next(decoder.decode(state, state.capacity + 1))
  no_cache = dataclasses.replace(model, family=dataclasses.replace(model.family, init_cache=None))
  with pytest.raises(DecodingError, match="cannot generate"):
    Decoder(no_cache)
