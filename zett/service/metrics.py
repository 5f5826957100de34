"""Prometheus metrics of one service instance (its own registry, so several apps can live in one process)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)


class ServiceMetrics:
  """Counters and histograms the app updates; `render()` gives the Prometheus text exposition."""

  content_type = CONTENT_TYPE_LATEST

  def __init__(self):
    self.registry = CollectorRegistry(auto_describe=True)
    r = self.registry
    self.requests = Counter(
      "zett_requests", "HTTP requests answered, by route and status code.", ("method", "route", "status"), registry=r
    )
    self.latency = Histogram(
      "zett_request_duration_seconds",
      "Time to answer an HTTP request (headers sent).",
      ("method", "route"),
      buckets=_LATENCY_BUCKETS_S,
      registry=r,
    )
    self.cache_hits = Counter("zett_embedding_cache_hits", "Token embeddings served from the LRU cache.", registry=r)
    self.cache_misses = Counter(
      "zett_embedding_cache_misses", "Token embeddings the hypernetwork had to predict.", registry=r
    )
    self.batch_requests = Histogram(
      "zett_embedding_batch_requests", "Requests merged into one hypernetwork call.", buckets=_BATCH_BUCKETS, registry=r
    )
    self.batch_tokens = Histogram(
      "zett_embedding_batch_tokens",
      "Distinct tokens predicted in one hypernetwork call.",
      buckets=_BATCH_BUCKETS,
      registry=r,
    )
    self.generated_tokens = Counter("zett_generated_tokens", "Tokens streamed by /v1/generate.", registry=r)
    self.jobs = Counter("zett_jobs", "Transfer jobs finished, by final status.", ("status",), registry=r)

  def add_gauge(self, name: str, documentation: str, read: Callable[[], float]) -> None:
    """A gauge whose value is read at scrape time (cache size, hit rate, running jobs)."""
    Gauge(name, documentation, registry=self.registry).set_function(read)

  def render(self) -> bytes:
    return generate_latest(self.registry)
