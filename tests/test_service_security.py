"""The service's defences, over real HTTP on loopback: hostile tokenizers, planted job records, Host names,
clients that hang up mid-body, and the disk quota of transfer results (issue 15)."""

import dataclasses
import json
import socket
import time

import httpx
import pytest
import tokenizers
from tokenizers import decoders, models, pre_tokenizers

from zett.service import ServiceSettings, create_app, serve_in_thread
from zett.service.demo import shared_tiny_engine


@pytest.fixture(scope="module")
def engine():
  return shared_tiny_engine()


@pytest.fixture
def serve(engine, tmp_path):
  """Starts servers with the default settings (no API key, loopback names only) plus `changes`."""
  running = []

  def start(**changes):
    settings = dataclasses.replace(ServiceSettings(jobs_dir=str(tmp_path / "jobs")), **changes)
    server = serve_in_thread(create_app(settings, engine))
    running.append(server)
    return server
  yield start
  for server in running:
    server.stop()


def test_a_tokenizer_with_a_huge_token_id_is_a_400_not_gigabytes(serve):
  server = serve()
  backend = tokenizers.Tokenizer(models.BPE(vocab={"a": 0, "b": 1, "ab": 10**9}, merges=[("a", "b")]))
  backend.pre_tokenizer, backend.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
  response = httpx.post(server.url + "/v1/transfer", json={"tokenizer": json.loads(backend.to_str())}, timeout=60)
  assert response.status_code == 400, response.text
  error = response.json()["error"]
  assert error["type"] == "invalid_tokenizer" and "'ab' has id 1000000000" in error["message"]
  assert httpx.get(server.url + "/v1/jobs").json()["jobs"] == []


def test_a_planted_job_record_never_becomes_a_path(serve, tmp_path):
  victim = tmp_path / "victim"
  victim.mkdir()
  (victim / "precious.txt").write_text("keep me")
  planted = tmp_path / "jobs" / "planted"
  planted.mkdir(parents=True)
  (planted / "job.json").write_text(json.dumps({"id": "../victim", "kind": "transfer", "status": "succeeded",
                                                "created_at": 0.0, "finished_at": 0.0}))
  server = serve(job_retention_s=1.0)  # the planted job is long "expired": expiry would delete jobs/../victim
  assert httpx.get(server.url + "/v1/jobs").json()["jobs"] == []
  assert (victim / "precious.txt").read_text() == "keep me"
  assert httpx.delete(server.url + "/v1/jobs/..%2Fvictim").status_code == 404
  assert victim.exists()


@pytest.mark.parametrize("host,status", [("localhost", 200), ("127.0.0.1:8000", 200), ("[::1]:8000", 200),
                                         ("LOCALHOST", 200), ("evil.example", 400), ("evil.example:8000", 400),
                                         ("127.0.0.1.evil.example", 400)])
def test_only_loopback_host_names_are_served_by_default(serve, host, status):
  server = serve()
  response = httpx.get(server.url + "/v1/jobs", headers={"Host": host})
  assert response.status_code == status, response.text
  if status == 400:
    assert response.json()["error"]["type"] == "invalid_host" and "allowed_hosts" in response.text


def test_an_allow_list_replaces_the_loopback_names(serve):
  server = serve(allowed_hosts=("zett.internal",))
  assert httpx.get(server.url + "/healthz", headers={"Host": "zett.internal:80"}).status_code == 200
  assert httpx.get(server.url + "/healthz").status_code == 400  # 127.0.0.1 is no longer listed
  server = serve(allowed_hosts=("*",))
  assert httpx.get(server.url + "/healthz", headers={"Host": "anything"}).status_code == 200


def test_a_client_that_hangs_up_mid_body_is_no_server_error(serve):
  server = serve()
  host, port = server.url.removeprefix("http://").split(":")
  with socket.create_connection((host, int(port))) as sock:
    sock.sendall(b"POST /v1/transfer HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 100000\r\n\r\n{\"tokenizer\": {")
    time.sleep(0.2)
  deadline = time.monotonic() + 10
  while 'status="499"' not in (text := httpx.get(server.url + "/metrics").text) and time.monotonic() < deadline:
    time.sleep(0.05)
  assert 'status="499"' in text and 'status="500"' not in text, text


def test_transfer_results_have_a_disk_quota(serve):
  server = serve(max_job_results_bytes=20480)  # one tar of a 10,000-byte file (tar pads to 10,240-byte records)
  jobs = server.server.config.app.state.jobs

  def produce(size):
    def run(work_dir):
      (work_dir / "out").mkdir()
      (work_dir / "out" / "weights.bin").write_bytes(b"\0" * size)
      return work_dir / "out", {}
    return run

  def finish(job):
    deadline = time.monotonic() + 30
    while (job := jobs.get(job.id)).status not in ("succeeded", "failed") and time.monotonic() < deadline:
      time.sleep(0.02)
    return job
  too_big = finish(jobs.submit("transfer", produce(20_000)))
  assert too_big.status == "failed" and "quota" in too_big.error and too_big.result_bytes is None
  assert not (jobs.root / too_big.id / "result.tar").exists()
  fits = finish(jobs.submit("transfer", produce(10_000)))
  assert fits.status == "succeeded" and fits.result_bytes == 20480
  response = httpx.post(server.url + "/v1/transfer", json={"tokenizer": {}}, timeout=60)
  assert response.status_code == 507 and response.json()["error"]["type"] == "storage_quota_full", response.text
  assert httpx.delete(server.url + f"/v1/jobs/{fits.id}").status_code == 204
  assert finish(jobs.submit("transfer", produce(1))).status == "succeeded"  # room again
