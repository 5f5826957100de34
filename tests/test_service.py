"""The HTTP service end to end: a real uvicorn server on loopback, a tiny random model, httpx clients."""

import base64
import io
import json
import socket
import tarfile
import time

import httpx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zett import hypernet
from zett.service import ServiceSettings, create_app, serve_in_thread
from zett.service.demo import shared_tiny_engine, tiny_tokenizer
from zett.tokenization import SurfaceEncoder

API_KEY = "test-key"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
SETTINGS = ServiceSettings(api_key=API_KEY, max_tokens_per_request=512, max_body_bytes=1 << 20, max_new_tokens=16,
                           max_concurrent_jobs=1, max_queued_jobs=2, request_timeout_s=120.0)


@pytest.fixture(scope="module")
def engine():
  return shared_tiny_engine()


@pytest.fixture(scope="module")
def server(engine, tmp_path_factory):
  import dataclasses
  settings = dataclasses.replace(SETTINGS, jobs_dir=str(tmp_path_factory.mktemp("jobs")))
  running = serve_in_thread(create_app(settings, engine))
  yield running
  running.stop()


@pytest.fixture(scope="module")
def client(server):
  with httpx.Client(base_url=server.url, headers=AUTH, timeout=120) as c:
    yield c


def library_embeddings(engine, tokens):
  """What `hypernet.predict` gives for `tokens` spelled by the base tokenizer's model (no service code)."""
  pieces = [t.encode() for t in tokens]
  ids, lengths, _, _ = SurfaceEncoder(engine.tokenizer).encode(pieces, engine.hypernetwork.config.surface_length)
  special = np.array([engine.tokenizer.special_tokens.get(t, -1) for t in tokens], np.int32)
  ids[special >= 0, 0], lengths[special >= 0] = special[special >= 0], 1
  loaded = engine.hypernetwork
  out = hypernet.predict_jit(loaded.config, loaded.params, jnp.asarray(ids), jnp.asarray(lengths),
                         engine.model.embeddings, jnp.asarray(special))
  return np.asarray(out.input), np.asarray(out.output)


def assert_alive(client):
  assert client.get("/healthz").json()["status"] == "ok"


def test_healthz_is_public_and_metrics_need_the_key(server, client):
  bare = httpx.get(server.url + "/healthz")
  assert bare.status_code == 200 and bare.json()["model"].startswith("tiny-random")
  assert httpx.get(server.url + "/metrics").status_code == 401
  client.get("/v1/jobs/not-a-job")
  text = client.get("/metrics").text
  assert 'zett_requests_total{method="GET",route="/healthz",status="200"}' in text
  # Labelled by route template, never by raw path (bounded label values).
  assert 'route="/v1/jobs/{job_id}",status="404"' in text and "not-a-job" not in text
  assert "zett_request_duration_seconds_bucket" in text and "zett_embedding_cache_hit_rate" in text


def test_openapi_schema_lists_every_endpoint(server):
  schema = httpx.get(server.url + "/openapi.json").json()
  paths = schema["paths"]
  for path in ("/healthz", "/metrics", "/v1/embeddings", "/v1/tokenize", "/v1/transfer", "/v1/jobs",
               "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/result", "/v1/generate"):
    assert path in paths, path
  body = schema["components"]["schemas"]["EmbeddingsRequest"]["properties"]["tokens"]
  assert body["maxItems"] == SETTINGS.max_tokens_per_request  # limits from the settings are in the schema


def test_the_job_schema_shows_every_field_of_the_job_record():
  # Two declarations on purpose (the record is what jobs.py persists, JobInfo what the API documents); a field added
  # to one must reach the other, or `_job_info` drops it from the answers.
  import dataclasses

  from zett.service.jobs import Job
  from zett.service.schemas import JobInfo

  shown = [name for name in JobInfo.model_fields if name != "result_url"]
  assert [field.name for field in dataclasses.fields(Job)] == shown


@pytest.mark.parametrize("encoding", ["float", "base64"])
def test_embeddings_equal_the_library(client, engine, encoding):
  tokens = [" hello", "def", "<s>", " self.assert", "é", "∑x", "\n\n    "]
  response = client.post("/v1/embeddings", json={"tokens": tokens, "encoding": encoding})
  assert response.status_code == 200, response.text
  body = response.json()
  assert body["embedding_dim"] == 64 and [d["token"] for d in body["data"]] == tokens

  def decode(value):
    if encoding == "base64":
      return np.frombuffer(base64.b64decode(value), "<f4")
    return np.asarray(value, np.float32)
  got_in = np.stack([decode(d["input"]) for d in body["data"]])
  got_out = np.stack([decode(d["output"]) for d in body["data"]])
  want_in, want_out = library_embeddings(engine, tokens)
  np.testing.assert_allclose(got_in, want_in, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(got_out, want_out, rtol=1e-5, atol=1e-5)
  # A special token keeps the base model's own row, bit for bit.
  np.testing.assert_array_equal(got_in[2], np.asarray(engine.model.embeddings.input[1]))


def test_embeddings_cache_hits_show_in_metrics(client):
  def hit_rate():
    line = next(l for l in client.get("/metrics").text.splitlines() if l.startswith("zett_embedding_cache_hit_rate "))
    return float(line.split()[1])
  tokens = [f" cached{i}" for i in range(20)]
  client.post("/v1/embeddings", json={"tokens": tokens}).raise_for_status()
  before = hit_rate()
  client.post("/v1/embeddings", json={"tokens": tokens}).raise_for_status()
  assert hit_rate() > before


def test_tokenize_matches_the_library_merger(client, engine):
  from zett.dynamic import merge_batch, split_texts
  texts = ["the cat sat on the mat", "the cat ate the rat", "a mat for the cat"]
  response = client.post("/v1/tokenize", json={"texts": texts, "target_reduction": 0.3, "embeddings": True})
  assert response.status_code == 200, response.text
  body = response.json()
  want = merge_batch(split_texts(engine.tokenizer.backend, texts), target_reduction=0.3,
                     max_token_length=engine.hypernetwork.config.surface_length)
  assert [d["ids"] for d in body["data"]] == [ids.tolist() for ids in want.ids]
  assert body["num_tokens"] == want.num_merged_tokens and body["stop_reason"] == "target_reduction"
  assert body["reduction"] >= 0.3 and "".join(body["data"][0]["tokens"]) == texts[0]
  # New tokens come with hypernetwork embeddings (the same ones /v1/embeddings gives).
  new = body["new_tokens"][0]
  direct = client.post("/v1/embeddings", json={"tokens": [new["token"]]}).json()["data"][0]["input"]
  np.testing.assert_allclose(np.frombuffer(base64.b64decode(new["input_embedding"]), "<f4"), direct, atol=1e-6)


def _sse_events(text):
  events = []
  for block in text.strip().split("\n\n"):
    fields = dict(line.split(": ", 1) for line in block.splitlines())
    events.append((fields["event"], json.loads(fields["data"])))
  return events


@pytest.mark.parametrize("prompt", ["def add(a, b):", "import os\n" * 12], ids=["short", "two-prefill-chunks"])
def test_generate_streams_greedy_tokens_equal_to_uncached_decoding(client, engine, prompt):
  with client.stream("POST", "/v1/generate", json={"prompt": prompt, "max_new_tokens": 6,
                                                   "stop_at_eos": False}) as response:
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    events = _sse_events(response.read().decode())
  assert events[-1] == ("done", {"finish_reason": "length", "num_tokens": 6})
  got = [data["id"] for kind, data in events if kind == "token"]
  # Reference: a full causal forward pass over the whole sequence every step, no KV cache (right padding
  # to one fixed length, so it compiles once; causal attention makes the padding invisible).
  bos = [engine.tokenizer.roles["bos"]] if engine.tokenizer.add_bos else []
  ids = bos + engine.tokenizer.encode(prompt)
  model = engine.model
  width = 128  # one compilation for both prompts
  assert len(ids) + 6 <= width
  if "import" in prompt:
    from zett.service.generation import PREFILL_CHUNK
    assert len(ids) > PREFILL_CHUNK  # really fed in two chunks
  forward = jax.jit(lambda params, x: model.module.apply({"params": params}, input_ids=x).logits)
  for _ in range(6):
    logits = forward(model.params, jnp.asarray([ids + [0] * (width - len(ids))]))
    ids.append(int(jnp.argmax(logits[0, len(ids) - 1])))
  assert got == ids[-6:]


def test_generate_large_vocabulary_without_index_is_a_clear_422(client):
  response = client.post("/v1/generate", json={"prompt": "x", "vocabulary": "large"})
  assert response.status_code == 422 and "vocabulary" in response.json()["error"]["message"]


def _target_tokenizer_json():
  return json.loads(tiny_tokenizer(vocab_size=300, train_bytes=60_000).to_str())


def test_transfer_job_end_to_end(client, engine, tmp_path):
  from zett import transfer as transfer_lib
  from zett.models.load import load_model
  spec = _target_tokenizer_json()
  response = client.post("/v1/transfer", json={"tokenizer": spec, "name": "tiny-300"})
  assert response.status_code == 202, response.text
  job_id = response.json()["id"]
  job = _wait_for(client, job_id)
  assert job["status"] == "succeeded", job
  assert job["info"]["target_vocab_size"] == 300 and job["info"]["method"] == "hypernet"
  assert job_id in [j["id"] for j in client.get("/v1/jobs").json()["jobs"]]
  tar_bytes = client.get(job["result_url"]).content
  with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
    tar.extractall(tmp_path, filter="data")
  exported = load_model(tmp_path / "model")
  assert exported.config.vocab_size == 300
  import tokenizers
  want = transfer_lib.transfer(engine.model, tokenizers.Tokenizer.from_str(json.dumps(spec)),
                               hypernet=engine.hypernetwork, progress=False)
  np.testing.assert_allclose(np.asarray(exported.embeddings.input), np.asarray(want.embeddings.input), atol=1e-6)


def test_transfer_job_records_the_hypernetwork_sha256_but_no_server_path(engine, tmp_path):
  import copy
  import dataclasses

  from zett.service._routes import _transfer_job
  from zett.tokenization import load_tokenizer

  spec_path = tmp_path / "tokenizer.json"
  spec_path.write_text(json.dumps(_target_tokenizer_json()))
  pinned = copy.copy(engine)
  pinned.hypernetwork = dataclasses.replace(engine.hypernetwork, sha256="ab" * 32, source="/srv/secret/hypernet")
  folder, info = _transfer_job(pinned, load_tokenizer(spec_path), "tiny-300")(tmp_path)
  assert info["hypernet_sha256"] == "ab" * 32
  written = "".join(p.read_text(errors="replace") for p in folder.iterdir() if p.suffix in (".json", ".md"))
  assert "ab" * 32 in written and "/srv/secret" not in written


def test_transfer_job_survives_client_disconnect(server, client):
  body = json.dumps({"tokenizer": _target_tokenizer_json(), "name": "hang-up"}).encode()
  host, port = server.url.removeprefix("http://").split(":")
  with socket.create_connection((host, int(port))) as sock:  # send the request, hang up without reading
    sock.sendall(b"POST /v1/transfer HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                 + f"Authorization: Bearer {API_KEY}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
    time.sleep(0.3)
  deadline = time.monotonic() + 60
  while time.monotonic() < deadline:
    jobs = [j for j in client.get("/v1/jobs").json()["jobs"] if j["info"].get("tokenizer") == "hang-up"]
    if jobs and jobs[0]["status"] in ("succeeded", "failed"):
      break
    time.sleep(0.2)
  assert len(jobs) == 1 and jobs[0]["status"] == "succeeded", jobs


def _wait_for(client, job_id, timeout_s=90):
  deadline = time.monotonic() + timeout_s
  while time.monotonic() < deadline:
    job = client.get(f"/v1/jobs/{job_id}").json()
    if job["status"] in ("succeeded", "failed"):
      return job
    time.sleep(0.1)
  raise AssertionError(f"job {job_id} did not finish in {timeout_s} s")


BAD_REQUESTS = [
    # (name, method, path, kwargs, status, error type)
    ("malformed json", "POST", "/v1/embeddings", {"content": b'{"tokens": [', "headers": {"content-type": "application/json"}},
     400, "invalid_json"),
    ("wrong type", "POST", "/v1/embeddings", {"json": {"tokens": "not a list"}}, 422, "validation_error"),
    ("wrong item type", "POST", "/v1/embeddings", {"json": {"tokens": [1, 2]}}, 422, "validation_error"),
    ("unknown field", "POST", "/v1/embeddings", {"json": {"tokens": ["a"], "extra": 1}}, 422, "validation_error"),
    ("empty token list", "POST", "/v1/embeddings", {"json": {"tokens": []}}, 422, "validation_error"),
    ("lone surrogate", "POST", "/v1/embeddings", {"content": b'{"tokens": ["\\ud800"]}',
                                                  "headers": {"content-type": "application/json"}}, 422,
     "validation_error"),
    ("non-utf8", "POST", "/v1/embeddings", {"content": b'{"tokens": ["\xff\xfe"]}',
                                            "headers": {"content-type": "application/json"}}, 400, "invalid_encoding"),
    ("not json content type", "POST", "/v1/embeddings", {"content": b"tokens=a",
                                                         "headers": {"content-type": "text/plain"}},
     415, "unsupported_media_type"),
    ("10^6 tokens", "POST", "/v1/embeddings", {"json": {"tokens": ["ab"] * 10**6}}, 413, "body_too_large"),
    ("oversize body", "POST", "/v1/tokenize", {"json": {"texts": ["x" * (2 << 20)]}}, 413, "body_too_large"),
    ("oversize chunked body", "POST", "/v1/tokenize",
     {"content": iter([b'{"texts": ["', b"y" * (1 << 20), b"y" * (1 << 20), b'"]}']),
      "headers": {"content-type": "application/json"}}, 413, "body_too_large"),
    ("too many tokens", "POST", "/v1/embeddings", {"json": {"tokens": ["a"] * 513}}, 422, "validation_error"),
    ("too many base tokens", "POST", "/v1/tokenize", {"json": {"texts": ["a b " * 400]}}, 413, "too_many_tokens"),
    ("bad reduction", "POST", "/v1/tokenize", {"json": {"texts": ["a"], "target_reduction": 1.5}}, 422,
     "validation_error"),
    ("too many new tokens", "POST", "/v1/generate", {"json": {"prompt": "a", "max_new_tokens": 10**6}}, 422,
     "validation_error"),
    ("invalid tokenizer", "POST", "/v1/transfer", {"json": {"tokenizer": {"model": {"type": "BPE", "vocab": 3}}}},
     400, "invalid_tokenizer"),
    ("unsupported tokenizer model", "POST", "/v1/transfer",
     {"json": {"tokenizer": json.loads(__import__("tokenizers").Tokenizer(
         __import__("tokenizers").models.WordLevel({"a": 0}, unk_token="a")).to_str())}}, 400, "invalid_tokenizer"),
    ("tokenizer not an object", "POST", "/v1/transfer", {"json": {"tokenizer": "tokenizer.json"}}, 422,
     "validation_error"),
    ("unknown job", "GET", "/v1/jobs/0123456789abcdef", {}, 404, "unknown_job"),
    ("unknown job result", "GET", "/v1/jobs/../../etc/passwd/result", {}, 404, None),
    ("unknown endpoint", "GET", "/v2/nothing", {}, 404, "not_found"),
    ("wrong method", "GET", "/v1/embeddings", {}, 405, "method_not_allowed"),
    ("missing api key", "POST", "/v1/embeddings", {"json": {"tokens": ["a"]}, "headers": {"Authorization": ""}},
     401, "unauthorized"),
    ("wrong api key", "POST", "/v1/embeddings", {"json": {"tokens": ["a"]}, "headers": {"Authorization": "Bearer nope"}},
     401, "unauthorized"),
    ("wrong scheme", "GET", "/v1/jobs", {"headers": {"Authorization": f"Basic {API_KEY}"}}, 401, "unauthorized"),
]


@pytest.mark.parametrize("name,method,path,kwargs,status,kind", BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS])
def test_bad_input_gives_a_clear_json_4xx_and_the_server_keeps_answering(client, name, method, path, kwargs,
                                                                         status, kind):
  response = client.request(method, path, **kwargs)
  assert response.status_code == status, response.text[:500]
  error = response.json()["error"]
  assert error["message"]
  if kind is not None:
    assert error["type"] == kind, error
  assert_alive(client)


def test_failed_and_unfinished_jobs_have_no_result(server, client):
  import threading
  jobs = server.server.config.app.state.jobs  # the server's own job pool: inject jobs that fail or wait
  release = threading.Event()

  def fail(work_dir):
    raise RuntimeError("tokenizer has no tokens the base can spell")

  def wait(work_dir):
    release.wait(30)
    (work_dir / "out").mkdir()
    return work_dir / "out", {}
  failed = _wait_for(client, jobs.submit("transfer", fail).id)
  assert failed["status"] == "failed" and "no tokens the base can spell" in failed["error"]
  assert failed["result_url"] is None
  response = client.get(f"/v1/jobs/{failed['id']}/result")
  assert response.status_code == 409 and response.json()["error"]["type"] == "job_not_finished"
  pending = jobs.submit("transfer", wait)
  try:
    response = client.get(f"/v1/jobs/{pending.id}/result")
    assert response.status_code == 409 and response.json()["error"]["type"] == "job_not_finished"
    response = client.delete(f"/v1/jobs/{pending.id}")  # still running: refused, nothing lost
    assert response.status_code == 409 and response.json()["error"]["type"] == "job_active"
  finally:
    release.set()
  assert _wait_for(client, pending.id)["status"] == "succeeded"
  assert client.delete(f"/v1/jobs/{pending.id}").status_code == 204
  assert not (jobs.root / pending.id).exists()
  assert client.get(f"/v1/jobs/{pending.id}").status_code == 404
  assert client.delete(f"/v1/jobs/{pending.id}").json()["error"]["type"] == "unknown_job"
  assert pending.id not in [j["id"] for j in client.get("/v1/jobs").json()["jobs"]]


def test_finished_jobs_expire_after_the_retention_period(tmp_path):
  from zett.service.jobs import JobManager, UnknownJobError

  def produce(work_dir):
    (work_dir / "out").mkdir()
    return work_dir / "out", {}
  jobs = JobManager(tmp_path, retention_s=0.5)
  try:
    job = jobs.submit("transfer", produce)
    deadline = time.time() + 10
    while jobs.get(job.id).status != "succeeded" and time.time() < deadline:
      time.sleep(0.02)
    assert (tmp_path / job.id / "result.tar").is_file()
    time.sleep(0.6)
    with pytest.raises(UnknownJobError):
      jobs.get(job.id)
    assert not (tmp_path / job.id).exists() and jobs.list() == []
  finally:
    jobs.shutdown()


def test_request_timeout_is_a_504(engine):
  app = create_app(ServiceSettings(request_timeout_s=0.05, batching=False), engine)
  original = engine.embed

  def slow_embed(tokens):
    time.sleep(0.5)
    return original(tokens)
  running = serve_in_thread(app)
  try:
    engine.embed = slow_embed
    response = httpx.post(running.url + "/v1/embeddings", json={"tokens": ["slow"]}, timeout=30)
    assert response.status_code == 504 and response.json()["error"]["type"] == "timeout"
  finally:
    engine.embed = original
    running.stop()


def test_a_server_bug_is_a_json_500_and_the_server_keeps_answering(engine, monkeypatch):
  running = serve_in_thread(create_app(ServiceSettings(batching=False), engine))

  def broken(tokens):
    raise RuntimeError("simulated bug")
  try:
    monkeypatch.setattr(engine, "embed", broken)
    response = httpx.post(running.url + "/v1/embeddings", json={"tokens": ["x"]}, timeout=30)
    assert response.status_code == 500 and response.json()["error"]["type"] == "internal_error"
    assert "simulated bug" not in response.text  # internals stay in the server log
    monkeypatch.undo()
    assert httpx.post(running.url + "/v1/embeddings", json={"tokens": ["x"]}, timeout=30).status_code == 200
  finally:
    running.stop()
