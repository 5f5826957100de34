"""/v1/generate with a large vocabulary (zett.ann): the stream equals the library's ANN decoding."""

import json

import httpx
import pytest

from zett.service import ServiceSettings, create_app, serve_in_thread
from zett.service.demo import shared_tiny_engine
from zett.service.generation import LargeVocabularyDecoder
from zett.stdlib_source import stdlib_texts_up_to


@pytest.fixture(scope="module")
def vocabulary(tmp_path_factory):
  from zett.ann.build import build_vocabulary, train_bpe_vocabulary
  from zett.ann.index import IndexSpec
  engine = shared_tiny_engine()
  text = "".join(stdlib_texts_up_to(200_000))
  tokenizer = train_bpe_vocabulary([text[i:i + 5000] for i in range(0, len(text), 5000)], 1500, engine.tokenizer)
  folder = tmp_path_factory.mktemp("large-vocab")
  build_vocabulary(folder, engine.model, tokenizer, hypernet=engine.hypernetwork,
                   index_spec=IndexSpec(kind="hnsw", hnsw_neighbors=16), progress=False)
  return folder


@pytest.mark.slow  # building the vocabulary and its index, then compiling the decoder: ~40 s on a loaded CPU
def test_generate_with_the_large_vocabulary_streams_the_library_tokens(vocabulary):
  engine = shared_tiny_engine()
  decoder = LargeVocabularyDecoder(engine.model, vocabulary)
  assert decoder.tokenizer.vocab_size > engine.tokenizer.vocab_size
  running = serve_in_thread(create_app(ServiceSettings(max_new_tokens=8), engine, large_vocabulary=decoder))
  try:
    schema = httpx.get(running.url + "/openapi.json").json()
    assert "large" in json.dumps(schema["components"]["schemas"]["GenerateRequest"])
    prompt = "def main(args):\n    return"
    response = httpx.post(running.url + "/v1/generate", json={"prompt": prompt, "vocabulary": "large",
                                                               "max_new_tokens": 5, "stop_at_eos": False},
                          timeout=120)
    assert response.status_code == 200, response.text
    events = [json.loads(block.split("data: ", 1)[1]) for block in response.text.strip().split("\n\n")]
    got = [e["id"] for e in events[:-1]]
    assert events[-1]["num_tokens"] == len(got) == 5
    want = [token for token, _ in decoder.generator.generate_ids(decoder.tokenizer.encode(prompt), 5,
                                                                 stop_at_eos=False)]
    assert got == want
  finally:
    running.stop()
