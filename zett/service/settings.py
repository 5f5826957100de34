"""Service limits and options: one frozen record, fixed when the server starts."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class ServiceSettings:
  """Limits and options of `zett serve` (all checked in `__post_init__`)."""

  max_tokens_per_request: int = 4096
  """Most token strings per /v1/embeddings request, and most base tokens per /v1/tokenize or generate prompt."""
  max_token_chars: int = 256
  """Longest single token string /v1/embeddings accepts (its surface form is cut to L subtokens anyway)."""
  max_body_bytes: int = 16 << 20
  """Largest request body; a tokenizer.json of a 250k vocabulary is ~10 MB."""
  max_concurrent_jobs: int = 1
  """Transfer jobs running at once; more wait in a queue."""
  max_queued_jobs: int = 16
  """Transfer jobs waiting to run; beyond this POST /v1/transfer answers 429."""
  request_timeout_s: float = 60.0
  """Wall-clock budget of one request (a generation stream stops at it)."""
  api_key: str | None = None
  """If set, every endpoint but /healthz and the schema needs `Authorization: Bearer <api_key>`."""
  batching: bool = True
  """Merge concurrent /v1/embeddings requests into one hypernetwork call."""
  max_batch_tokens: int = 1024
  """Most distinct uncached tokens in one merged hypernetwork call."""
  batch_wait_ms: float = 0.0
  """How long the batcher waits for more requests after the first one arrives. 0: take what is queued
  now; requests that arrive during a hypernetwork call form the next batch, so batches still grow with
  load, and a lone request never waits (a timer wait costs a scheduler slice on a busy CPU)."""
  cache_size: int = 8192
  """Entries of the LRU cache of predicted embeddings (keyed by token bytes); 0 disables it."""
  max_new_tokens: int = 256
  """Most tokens one /v1/generate call may produce."""
  max_texts_per_request: int = 256
  """Most texts in one /v1/tokenize request."""
  jobs_dir: str | None = None
  """Where transfer jobs write their results; None means a temporary folder removed at shutdown."""
  job_retention_s: float = 86400.0
  """Finished transfer jobs (record and result tar) are deleted this many seconds after they finish; 0 keeps
  them until `DELETE /v1/jobs/{id}`."""
  max_job_results_bytes: int = 4 << 30
  """Disk quota of all kept transfer results together (a small upload can make a result of hundreds of MB): a
  result that does not fit fails its job, and POST /v1/transfer answers 507 while the quota is full."""
  allowed_hosts: tuple[str, ...] = ("localhost", "127.0.0.1", "::1")
  """Host header values (without port) the server answers; others get 400. Refusing foreign names stops DNS
  rebinding (a web page whose name resolves to 127.0.0.1 would otherwise reach a keyless server through the
  browser). `zett serve --host ADDRESS` adds that address; "*" allows any host."""

  def __post_init__(self):
    positive = (
      "max_tokens_per_request",
      "max_token_chars",
      "max_body_bytes",
      "max_concurrent_jobs",
      "max_batch_tokens",
      "max_new_tokens",
      "max_texts_per_request",
      "max_job_results_bytes",
    )
    for name in positive:
      value = getattr(self, name)
      if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"service setting {name} must be a positive integer, got {value!r}")
    for name in ("max_queued_jobs", "cache_size"):
      value = getattr(self, name)
      if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"service setting {name} must be an integer >= 0, got {value!r}")
    if not self.request_timeout_s > 0:
      raise ValueError(f"service setting request_timeout_s must be > 0, got {self.request_timeout_s!r}")
    if not self.job_retention_s >= 0:
      raise ValueError(f"service setting job_retention_s must be >= 0, got {self.job_retention_s!r}")
    if not self.batch_wait_ms >= 0:
      raise ValueError(f"service setting batch_wait_ms must be >= 0, got {self.batch_wait_ms!r}")
    if not self.allowed_hosts or not all(isinstance(h, str) and h.strip() for h in self.allowed_hosts):
      raise ValueError(f'service setting allowed_hosts must list host names (or "*"), got {self.allowed_hosts!r}')
    # Upper bounds: a few extra zeros in a setting would otherwise size buffers, caches or waits absurdly.
    for name, high in (
      ("max_tokens_per_request", 1 << 24),
      ("max_token_chars", 1 << 16),
      ("max_body_bytes", 1 << 34),
      ("max_concurrent_jobs", 256),
      ("max_queued_jobs", 1 << 16),
      ("max_batch_tokens", 1 << 20),
      ("cache_size", 1 << 26),
      ("max_new_tokens", 1 << 20),
      ("max_texts_per_request", 1 << 20),
      ("max_job_results_bytes", 1 << 50),
      ("request_timeout_s", 7 * 86400),
      ("job_retention_s", 366 * 86400),
      ("batch_wait_ms", 60_000),
    ):
      if getattr(self, name) > high:
        raise ValueError(f"service setting {name} must be at most {high:,}, got {getattr(self, name)!r}")
    if self.api_key is not None and (
      not self.api_key or not self.api_key.isascii() or not self.api_key.isprintable() or " " in self.api_key
    ):
      # HTTP headers are Latin-1 bytes: a key with other characters (or spaces) could never be sent as given.
      raise ValueError("service setting api_key must be a non-empty string of printable ASCII without spaces")
