"""The FastAPI app: routes over an `Engine`, a request batcher, a job pool and a decoder.

Every error a client can cause answers with one JSON shape, `{"error": {"type", "message", "details"}}`,
and a 4xx status; the server keeps serving.
"""

import asyncio
import base64
import contextlib
import logging
import shutil
import tempfile
import time
from typing import Any

import numpy as np
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from zett.service import _routes, schemas
from zett.service._gate import Gate
from zett.service.engine import EmbeddingBatcher, Engine
from zett.service.errors import ServiceError, error_response, utf8
from zett.service.jobs import JobManager
from zett.service.metrics import ServiceMetrics
from zett.service.settings import ServiceSettings

_log = logging.getLogger("zett.service")
_ERRORS: dict[int | str, dict[str, Any]] = {
  code: {"model": schemas.ErrorResponse} for code in (400, 401, 404, 413, 415, 422, 504)
}


def _rows(matrix: np.ndarray, encoding: str):
  if encoding == "base64":
    return [base64.b64encode(np.ascontiguousarray(r, dtype="<f4").tobytes()).decode() for r in matrix]
  return matrix.astype(np.float32).tolist()


def create_app(settings: ServiceSettings, engine: Engine, large_vocabulary=None) -> FastAPI:
  """The service over a loaded `engine`, limited by `settings`.

  Args:
    large_vocabulary: optional `zett.service.generation.LargeVocabularyDecoder` (or any object with
      `tokenizer` and `steps(prompt, max_new_tokens, temperature, seed, stop_at_eos) -> iterator of
      (id, bytes)`), offered as `vocabulary="large"` in /v1/generate.
  """
  metrics = ServiceMetrics()
  requests = schemas.request_models(settings, large_vocabulary is not None)
  started_at = time.time()
  metrics.add_gauge(
    "zett_embedding_cache_hit_rate",
    "Fraction of token embeddings served from the cache.",
    lambda: engine.cache.hit_rate,
  )
  metrics.add_gauge("zett_embedding_cache_entries", "Entries in the embedding cache.", lambda: len(engine.cache))

  def on_batch(num_requests: int, num_tokens: int, hits: int) -> None:
    metrics.batch_requests.observe(num_requests)
    metrics.batch_tokens.observe(num_tokens - hits)
    metrics.cache_hits.inc(hits)
    metrics.cache_misses.inc(num_tokens - hits)

  batcher = EmbeddingBatcher(
    engine, settings.max_batch_tokens, settings.batch_wait_ms / 1000, settings.batching, on_batch
  )
  jobs_dir = settings.jobs_dir or tempfile.mkdtemp(prefix="zett-jobs-")
  temp_jobs_dir = None if settings.jobs_dir else jobs_dir
  jobs = JobManager(
    jobs_dir,
    settings.max_concurrent_jobs,
    settings.max_queued_jobs,
    on_finish=lambda job: metrics.jobs.labels(job.status).inc(),
    retention_s=settings.job_retention_s,
    max_result_bytes=settings.max_job_results_bytes,
  )
  for status in ("queued", "running"):
    metrics.add_gauge(
      f"zett_jobs_{status}", f"Transfer jobs {status} now.", lambda status=status: jobs.counts()[status]
    )

  @contextlib.asynccontextmanager
  async def lifespan(app):
    await batcher.start()
    try:
      yield
    finally:
      await batcher.stop()
      jobs.shutdown(wait=False)
      if temp_jobs_dir:
        shutil.rmtree(temp_jobs_dir, ignore_errors=True)

  app = FastAPI(
    title="zett",
    version="0.1",
    lifespan=lifespan,
    responses=_ERRORS,
    description="Embeddings for any tokenizer's tokens, tokenizer transfer, dynamic tokenization and "
    "generation for a frozen base model, predicted by a hypernetwork.",
  )
  app.state.engine, app.state.jobs, app.state.metrics, app.state.settings = engine, jobs, metrics, settings

  @app.exception_handler(ServiceError)
  async def _service_error(request, error: ServiceError):
    return error_response(error.status, error.kind, error.message, error.details)

  @app.exception_handler(RequestValidationError)
  async def _validation_error(request, error: RequestValidationError):
    problems = [{"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")} for e in error.errors()]
    if any(p["type"] == "json_invalid" for p in problems):
      return error_response(400, "invalid_json", "request body is not valid JSON", problems)
    summary = "; ".join(f"{'.'.join(map(str, p['loc'][1:] or p['loc']))}: {p['msg']}" for p in problems[:5])
    return error_response(422, "validation_error", f"invalid request: {summary}", problems)

  @app.exception_handler(StarletteHTTPException)
  async def _http_error(request, error: StarletteHTTPException):
    kinds = {404: "not_found", 405: "method_not_allowed"}
    message = error.detail if isinstance(error.detail, str) else "request failed"
    if error.status_code == 404:
      message = f"no such endpoint: {request.method} {request.url.path}"
    return error_response(
      error.status_code, kinds.get(error.status_code, "http_error"), message, headers=getattr(error, "headers", None)
    )

  @app.exception_handler(Exception)
  async def _internal_error(request, error: Exception):
    # A bug, not a client error: log the traceback, answer in the same JSON shape (no internals leaked).
    _log.exception("unhandled error in %s %s", request.method, request.url.path)
    return error_response(500, "internal_error", f"internal error ({type(error).__name__}); see the server log")

  async def within_timeout(awaitable):
    try:
      return await asyncio.wait_for(awaitable, settings.request_timeout_s)
    except TimeoutError:
      raise ServiceError(504, "timeout", f"request took longer than {settings.request_timeout_s:g} s") from None

  @app.get("/healthz", response_model=schemas.Health, tags=["service"])
  async def healthz():
    """Liveness: answers as long as the server runs (no API key needed)."""
    return schemas.Health(
      status="ok",
      model=engine.model.name,
      embedding_dim=engine.embedding_dim,
      uptime_s=round(time.time() - started_at, 3),
    )

  @app.get(
    "/metrics",
    tags=["service"],
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
  )
  async def prometheus_metrics():
    """Prometheus text: requests and latencies per route, cache hit rate, batch sizes, jobs."""
    return Response(metrics.render(), media_type=metrics.content_type)

  # The hot path answers with a prebuilt JSONResponse: validating its own output through a response
  # model would cost more than the hypernetwork for small requests. The schema is still documented.
  @app.post(
    "/v1/embeddings",
    response_class=JSONResponse,
    tags=["embeddings"],
    responses={200: {"model": schemas.EmbeddingsResponse}},
  )
  # The request model is made per app (its limits come from the settings); FastAPI reads it from here.
  async def embeddings(body: requests.embeddings):  # pyright: ignore[reportInvalidTypeForm]
    """Predicted input (and output, and bias) embeddings of token strings, through the LRU cache."""
    keys = utf8(body.tokens, "tokens")
    rows = await within_timeout(batcher.embed(keys))
    inputs = _rows(rows.input, body.encoding)
    outputs = _rows(rows.output, body.encoding) if rows.output is not None else [None] * len(keys)
    biases = rows.bias.tolist() if rows.bias is not None else [None] * len(keys)
    data = [
      {"token": t, "input": i, "output": o, "bias": b} for t, i, o, b in zip(body.tokens, inputs, outputs, biases)
    ]
    return JSONResponse(
      {
        "model": engine.model.name,
        "embedding_dim": engine.embedding_dim,
        "encoding": body.encoding,
        "data": data,
        "num_tokens": len(data),
      }
    )

  _routes.add_routes(
    app, _routes.Context(settings, engine, batcher, jobs, metrics, within_timeout, requests, large_vocabulary)
  )
  # Outside every route (but inside Starlette's last-resort 500 handler): auth, body limit, metrics.
  app.add_middleware(
    Gate,
    api_key=settings.api_key,
    max_body_bytes=settings.max_body_bytes,
    metrics=metrics,
    allowed_hosts=settings.allowed_hosts,
  )
  return app
