"""Routes beyond embeddings: dynamic tokenization, transfer jobs, streamed generation."""

import asyncio
import base64
import codecs
import dataclasses
import json
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from fastapi import FastAPI
from fastapi.responses import FileResponse, Response, StreamingResponse

from zett.service import schemas
from zett.service.engine import EmbeddingBatcher, Engine
from zett.service.errors import ServiceError, utf8
from zett.service.jobs import SUCCEEDED, JobActiveError, JobManager, JobQueueFullError, JobQuotaError, UnknownJobError
from zett.service.metrics import ServiceMetrics
from zett.service.settings import ServiceSettings


@dataclasses.dataclass
class Context:
  settings: ServiceSettings
  engine: Engine
  batcher: EmbeddingBatcher
  jobs: JobManager
  metrics: ServiceMetrics
  within_timeout: Callable
  requests: schemas.RequestModels
  large_vocabulary: Any = None
  generator: Any = None


# One server-sent event (schema of each event in the stream); `data` holds a JSON object.
_SSE_EVENT = {
  "type": "object",
  "required": ["event", "data"],
  "properties": {"event": {"type": "string", "enum": ["token", "done"]}, "data": {"type": "string"}},
}


def _text(data: bytes) -> str:
  return data.decode("utf-8", errors="replace")


def add_routes(app: FastAPI, ctx: Context) -> None:
  settings, engine = ctx.settings, ctx.engine

  @app.post("/v1/tokenize", response_model=schemas.TokenizeResponse, tags=["dynamic tokenization"])
  # The request model is made per app (its limits come from the settings); FastAPI reads it from here.
  async def tokenize(body: ctx.requests.tokenize):  # pyright: ignore[reportInvalidTypeForm]
    """Dynamic tokenization: split by the base tokenizer, then merge frequent pairs batch-wide (batch-level BPE).

    With no stopping rule merging goes to word level; `target_reduction`, `max_merges` and
    `min_frequency` stop it earlier, and no token grows beyond `max_token_length` base tokens
    (default: the hypernetwork's surface length). New tokens get ids from the base vocabulary size
    up, with their spelling in base ids and (if asked) their predicted input embedding.
    """
    utf8(body.texts, "texts")
    result = await ctx.within_timeout(asyncio.to_thread(_merge, engine, body, settings.max_tokens_per_request))
    new_embeddings = [None] * len(result.new_tokens)
    if body.embeddings and result.new_tokens:
      rows = await ctx.within_timeout(ctx.batcher.embed(list(result.new_tokens)))
      new_embeddings = [base64.b64encode(np.ascontiguousarray(r, "<f4").tobytes()).decode() for r in rows.input]
    first_new = result.base_vocab_size
    return schemas.TokenizeResponse(
      data=[
        schemas.TokenizedText(tokens=[_text(p) for p in pieces], ids=ids.tolist())
        for pieces, ids in zip(result.pieces, result.ids)
      ],
      new_tokens=[
        schemas.NewToken(id=first_new + k, token=_text(t), surface_ids=list(map(int, s)), input_embedding=e)
        for k, (t, s, e) in enumerate(zip(result.new_tokens, result.new_token_base_ids, new_embeddings))
      ],
      num_base_tokens=result.num_base_tokens,
      num_tokens=result.num_merged_tokens,
      reduction=round(result.reduction, 6),
      num_merges=len(result.merges),
      stop_reason=result.stop_reason,
    )

  @app.post(
    "/v1/transfer",
    response_model=schemas.JobInfo,
    status_code=202,
    tags=["transfer"],
    responses={429: {"model": schemas.ErrorResponse}, 507: {"model": schemas.ErrorResponse}},
  )
  async def transfer(body: schemas.TransferRequest):
    """Starts a transfer of the base model to an uploaded tokenizer.json; poll GET /v1/jobs/{id}.

    The job runs on the server whether or not the client stays; its result is a tar of the
    Hugging Face folder (weights, config, tokenizer, model card) at GET /v1/jobs/{id}/result.
    """
    try:
      ctx.jobs.check_capacity()  # before parsing the upload: a full server should not spend time on it
      tokenizer = await asyncio.to_thread(_read_tokenizer, body.tokenizer)
      run = _transfer_job(engine, tokenizer, body.name)
      job = ctx.jobs.submit(
        "transfer",
        run,
        description=f"transfer {engine.model.name} to {body.name}",
        info={"tokenizer": body.name, "target_vocab_size": tokenizer.vocab_size},
      )
    except JobQueueFullError as error:
      raise ServiceError(429, "too_many_jobs", str(error)) from None
    except JobQuotaError as error:
      raise ServiceError(507, "storage_quota_full", str(error)) from None
    return _job_info(job)

  @app.get("/v1/jobs", response_model=schemas.JobList, tags=["transfer"])
  async def list_jobs():
    """Every job this server knows (newest first), finished ones included."""
    return schemas.JobList(jobs=[_job_info(j) for j in ctx.jobs.list()])

  @app.get("/v1/jobs/{job_id}", response_model=schemas.JobInfo, tags=["transfer"])
  async def get_job(job_id: str):
    """Status of one job."""
    return _job_info(_find_job(ctx.jobs, job_id))

  @app.delete(
    "/v1/jobs/{job_id}",
    status_code=204,
    response_class=Response,
    tags=["transfer"],
    responses={404: {"model": schemas.ErrorResponse}, 409: {"model": schemas.ErrorResponse}},
  )
  async def delete_job(job_id: str):
    """Deletes a finished job's record and result (finished jobs also expire after `job_retention_s`)."""
    try:
      ctx.jobs.delete(job_id)
    except UnknownJobError:
      raise ServiceError(404, "unknown_job", f"no job with id {job_id!r}") from None
    except JobActiveError as error:
      raise ServiceError(409, "job_active", str(error)) from None
    return Response(status_code=204)

  @app.get(
    "/v1/jobs/{job_id}/result",
    tags=["transfer"],
    response_class=FileResponse,
    responses={
      200: {"content": {"application/x-tar": {"schema": {"type": "string", "format": "binary"}}}},
      409: {"model": schemas.ErrorResponse},
    },
  )
  async def job_result(job_id: str):
    """The finished job's Hugging Face folder as an uncompressed tar."""
    job = _find_job(ctx.jobs, job_id)
    if job.status != SUCCEEDED:
      detail = f": {job.error}" if job.error else ""
      raise ServiceError(409, "job_not_finished", f"job {job_id} is {job.status}{detail}; no result to download")
    return FileResponse(
      ctx.jobs.result_path(job_id), media_type="application/x-tar", filename=f"zett-transfer-{job_id}.tar"
    )

  @app.post(
    "/v1/generate",
    tags=["generation"],
    responses={
      200: {
        "content": {"text/event-stream": {"schema": _SSE_EVENT}},
        "description": "Server-sent events: one 'token' event per token, then 'done'.",
      }
    },
  )
  # The request model is made per app (its limits come from the settings); FastAPI reads it from here.
  async def generate(body: ctx.requests.generate):  # pyright: ignore[reportInvalidTypeForm]
    """Generation streamed as server-sent events.

    Events: `token` with `{"index", "id", "text"}` per generated token (`text` holds the characters
    completed by this token: a character split over byte tokens appears with its last byte), then `done` with
    `{"finish_reason": "length" | "eos" | "timeout", "num_tokens"}`.
    """
    utf8([body.prompt], "prompt")
    prompt_ids = await asyncio.to_thread(engine.tokenizer.encode, body.prompt)
    if len(prompt_ids) > settings.max_tokens_per_request:
      raise ServiceError(
        413,
        "too_many_tokens",
        f"the prompt has {len(prompt_ids)} tokens; the limit is {settings.max_tokens_per_request}",
      )
    bos = engine.tokenizer.roles.get("bos")
    if engine.tokenizer.add_bos and bos is not None:  # the base tokenizer's own convention
      prompt_ids = [bos] + prompt_ids
    eos = engine.tokenizer.roles.get("eos")
    stop_ids = frozenset([eos]) if body.stop_at_eos and eos is not None else frozenset()
    if body.vocabulary == "large":  # only in the schema when the server has one
      steps = ctx.large_vocabulary.steps(
        body.prompt, body.max_new_tokens, body.temperature, body.seed, body.stop_at_eos
      )
      stop_ids = frozenset([ctx.large_vocabulary.tokenizer.roles.get("eos")]) if body.stop_at_eos else frozenset()
    else:
      if ctx.generator is None:
        from zett.service.generation import Generator

        ctx.generator = Generator(engine.model)
      decoding = ctx.generator.decode(prompt_ids, body.max_new_tokens, body.temperature, body.seed, stop_ids)
      steps = ((i, engine.tokenizer.token_bytes(i)) for i in decoding)
    return StreamingResponse(
      _events(ctx, steps, stop_ids), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
    )


def _merge(engine: Engine, body, max_tokens: int):
  from zett.dynamic import MergeInputError, merge_batch, split_texts

  batch = split_texts(engine.tokenizer.backend, body.texts)
  total = sum(len(ids) for ids in batch.token_ids)
  if total > max_tokens:
    raise ServiceError(413, "too_many_tokens", f"the texts have {total} base tokens; the limit is {max_tokens}")
  try:
    return merge_batch(
      batch,
      max_merges=body.max_merges,
      target_reduction=body.target_reduction,
      min_frequency=body.min_frequency,
      max_token_length=body.max_token_length or engine.hypernetwork.config.surface_length,
    )
  except MergeInputError as error:
    raise ServiceError(422, "invalid_batch", str(error)) from None


def _read_tokenizer(spec: dict):
  import tokenizers

  from zett.tokenization import TokenizerError, from_backend

  try:
    backend = tokenizers.Tokenizer.from_str(json.dumps(spec))
  except Exception as error:  # the Rust parser raises a bare Exception with serde's message
    raise ServiceError(400, "invalid_tokenizer", f"tokenizer is not a valid tokenizer.json: {error}") from None
  try:
    return from_backend(backend, "uploaded tokenizer.json")
  except TokenizerError as error:
    raise ServiceError(400, "invalid_tokenizer", str(error)) from None


def _transfer_job(engine: Engine, tokenizer, name: str):
  def run(work_dir):
    from zett import transfer as transfer_lib

    # Batches of the engine's own bucket sizes reuse its compiled hypernetwork (same shapes, same config). The record
    # and the exported model card keep the weights' sha256 but must not name files on the server.
    anonymous = dataclasses.replace(engine.hypernetwork, source=None)
    model, record = transfer_lib.transfer_with_record(
      engine.model, tokenizer, hypernet=anonymous, batch_size=engine.batch_rows(tokenizer.vocab_size), progress=False
    )
    record = dataclasses.replace(record, tokenizer=name)
    folder = transfer_lib.export(model, record, work_dir / "model")
    # The record's scalar facts (method, vocabulary size, timings...) go into the job's info.
    return folder, {k: v for k, v in record.to_json().items() if isinstance(v, (bool, int, float, str))}

  return run


def _find_job(jobs: JobManager, job_id: str):
  try:
    return jobs.get(job_id)
  except UnknownJobError:
    raise ServiceError(404, "unknown_job", f"no job with id {job_id!r}") from None


def _job_info(job) -> schemas.JobInfo:
  url = f"/v1/jobs/{job.id}/result" if job.status == SUCCEEDED else None
  return schemas.JobInfo(**job.to_json(), result_url=url)


async def _events(ctx: Context, steps, stop_ids):
  """Server-sent events over a blocking iterator of (id, bytes); each step runs in a worker thread."""
  deadline = time.monotonic() + ctx.settings.request_timeout_s
  text_decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")  # a character may span tokens
  count, reason = 0, "length"
  while True:
    if time.monotonic() > deadline:
      reason = "timeout"
      break
    step = await asyncio.to_thread(next, steps, None)  # steps are tuples: None is the end
    if step is None:
      break
    token_id, data = step
    ctx.metrics.generated_tokens.inc()
    text = text_decoder.decode(data)
    yield f"event: token\ndata: {json.dumps({'index': count, 'id': int(token_id), 'text': text})}\n\n"
    count += 1
    if token_id in stop_ids:
      reason = "eos"
      break
  yield f"event: done\ndata: {json.dumps({'finish_reason': reason, 'num_tokens': count})}\n\n"
