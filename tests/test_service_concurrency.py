"""50 concurrent clients against one server for a few seconds: no errors, no lost jobs, and every
embedding equal to the library's prediction (batched requests must not mix up rows)."""

import asyncio
import json
import random
import time

import httpx
import jax.numpy as jnp
import numpy as np
import pytest

from zett import hypernet
from zett.service import ServiceSettings, create_app, serve_in_thread
from zett.service.demo import shared_tiny_engine, tiny_tokenizer
from zett.tokenization import SurfaceEncoder

NUM_CLIENTS = 50
DURATION_S = 3.0
NUM_JOBS = 4


@pytest.fixture(scope="module")
def engine():
  engine = shared_tiny_engine()
  engine.warm_up(256)  # as `zett serve` does at start: the timed phase measures serving, not compiling
  return engine


@pytest.fixture(scope="module")
def server(engine):
  settings = ServiceSettings(max_concurrent_jobs=2, max_queued_jobs=NUM_JOBS, max_batch_tokens=256)
  running = serve_in_thread(create_app(settings, engine))
  yield running
  running.stop()


def _token_pool(engine, size=300, seed=0):
  rng = random.Random(seed)
  words = engine.tokenizer.decode(list(range(3, engine.tokenizer.vocab_size))).split()
  pool = {" " + w for w in words if w.isprintable()} | {w for w in words if w.isprintable()}
  pool = sorted(pool)
  rng.shuffle(pool)
  return pool[:size]


def _library(engine, tokens):
  ids, lengths, _, _ = SurfaceEncoder(engine.tokenizer).encode([t.encode() for t in tokens],
                                                               engine.hypernetwork.config.surface_length)
  loaded = engine.hypernetwork
  out = hypernet.predict_jit(loaded.config, loaded.params, jnp.asarray(ids), jnp.asarray(lengths),
                             engine.model.embeddings)
  return dict(zip(tokens, np.asarray(out.input))), dict(zip(tokens, np.asarray(out.output)))


async def _client(client, index, pool, stop_at, results, errors, answered):
  rng = random.Random(index)
  while time.monotonic() < stop_at:
    answered[index] += 1
    roll = rng.random()
    try:
      if roll < 0.8:
        tokens = rng.sample(pool, rng.randint(1, 24))
        response = await client.post("/v1/embeddings", json={"tokens": tokens})
        if response.status_code == 200:
          results.append((tokens, response.json()))
      elif roll < 0.9:
        response = await client.post("/v1/tokenize", json={"texts": [" ".join(rng.sample(pool, 6))] * 2})
      else:
        response = await client.get("/v1/jobs")
      if response.status_code != 200:
        errors.append(f"{response.status_code}: {response.text[:200]}")
    except httpx.HTTPError as error:
      errors.append(repr(error))


async def _load(url, pool, tokenizer_spec):
  results, errors, answered = [], [], [0] * NUM_CLIENTS
  # One connection per client (a shared pool of NUM_CLIENTS connections; creating 50 httpx clients would
  # itself take seconds of CPU on a loaded machine).
  limits = httpx.Limits(max_connections=NUM_CLIENTS, max_keepalive_connections=NUM_CLIENTS)
  async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
    submitted = await asyncio.gather(*(
        client.post("/v1/transfer", json={"tokenizer": tokenizer_spec, "name": f"load-{i}"}) for i in range(NUM_JOBS)))
    job_ids = [r.json()["id"] for r in submitted if r.status_code == 202]
    errors += [f"transfer {r.status_code}: {r.text[:200]}" for r in submitted if r.status_code != 202]
    stop_at = time.monotonic() + DURATION_S
    await asyncio.gather(*(_client(client, i, pool, stop_at, results, errors, answered)
                           for i in range(NUM_CLIENTS)))
  return job_ids, results, errors, answered


def test_fifty_concurrent_clients(server, engine):
  pool = _token_pool(engine)
  want_in, want_out = _library(engine, pool)
  spec = json.loads(tiny_tokenizer(vocab_size=300, train_bytes=60_000).to_str())
  job_ids, results, errors, answered = asyncio.run(_load(server.url, pool, spec))

  assert not errors, errors[:5]
  assert len(job_ids) == NUM_JOBS
  assert min(answered) >= 1 and results  # every client was served (errors would be listed above)
  for tokens, body in results:
    assert [d["token"] for d in body["data"]] == tokens
    np.testing.assert_allclose(np.array([d["input"] for d in body["data"]]), np.stack([want_in[t] for t in tokens]),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.array([d["output"] for d in body["data"]]),
                               np.stack([want_out[t] for t in tokens]), rtol=1e-5, atol=1e-5)

  # No lost jobs: all listed, all finish.
  deadline = time.monotonic() + 90
  with httpx.Client(base_url=server.url, timeout=60) as client:
    while time.monotonic() < deadline:
      listed = {j["id"]: j["status"] for j in client.get("/v1/jobs").json()["jobs"]}
      if all(listed.get(i) in ("succeeded", "failed") for i in job_ids):
        break
      time.sleep(0.2)
    assert {i: listed.get(i) for i in job_ids} == {i: "succeeded" for i in job_ids}
    metrics = client.get("/metrics").text
  # Concurrent requests were merged: some hypernetwork call served more than one request.
  values = {line.split()[0]: float(line.split()[1]) for line in metrics.splitlines()
            if line.startswith("zett_embedding_batch_requests_")}
  assert values["zett_embedding_batch_requests_sum"] > values["zett_embedding_batch_requests_count"]
