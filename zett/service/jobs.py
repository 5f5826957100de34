"""Background jobs (tokenizer transfers): a bounded worker pool, records on disk, results as tar files.

A job runs in a worker thread owned by the server, not by the request that created it, so it keeps
running when the client disconnects; its record (`job.json`) and result (`result.tar`) live in the
job's folder, and a server restarted on the same `jobs_dir` lists earlier jobs again. Finished jobs are
deleted (folder and all) `retention_s` seconds after they finish, or earlier on request (`delete`).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
import re
import shutil
import tarfile
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from pathlib import Path

from zett.errors import ZettError

QUEUED, RUNNING, SUCCEEDED, FAILED = "queued", "running", "succeeded", "failed"
RESULT_NAME = "result.tar"
RECORD_NAME = "job.json"
_JOB_ID = re.compile(r"[0-9a-f]{32}")  # uuid4().hex: also the job's folder name, so never a path


def is_job_id(text: str) -> bool:
  """Whether `text` can be a job id; ids from URLs and from records on disk are both checked with this."""
  return isinstance(text, str) and _JOB_ID.fullmatch(text) is not None


class UnknownJobError(ZettError, KeyError):
  """No job has this id."""


class JobQueueFullError(ZettError, RuntimeError):
  """As many jobs as allowed are already running and queued."""


class JobActiveError(ZettError, RuntimeError):
  """The job is still queued or running, so it cannot be deleted."""


class JobQuotaError(ZettError, RuntimeError):
  """The finished jobs' results already fill the disk quota."""


@dataclasses.dataclass
class Job:
  """One background job, as listed by GET /v1/jobs."""

  id: str
  kind: str
  status: str
  created_at: float
  description: str = ""
  started_at: float | None = None
  finished_at: float | None = None
  error: str | None = None
  result_bytes: int | None = None
  info: dict = dataclasses.field(default_factory=dict)

  def to_json(self) -> dict:
    return dataclasses.asdict(self)


class JobManager:
  """Runs jobs on at most `max_concurrent` worker threads, with at most `max_queued` waiting.

  A job function gets its own empty folder and returns the folder to pack into `result.tar`
  (plus a dict of facts for the record); anything it raises marks the job failed with the message.
  """

  def __init__(
    self,
    root: str | Path,
    max_concurrent: int = 1,
    max_queued: int = 16,
    on_finish=None,
    retention_s: float = 0.0,
    max_result_bytes: int | None = None,
  ):
    """`retention_s`: finished jobs older than this are deleted (checked whenever jobs are listed,
    looked up or submitted); 0 keeps them until deleted by hand. `max_result_bytes`: disk quota of all kept
    results together; a result that does not fit fails its job, and no job starts while the quota is full."""
    self.root = Path(root)
    self.retention_s = retention_s
    self.max_result_bytes = max_result_bytes
    self.root.mkdir(parents=True, exist_ok=True)
    self.max_concurrent = max_concurrent
    self.max_queued = max_queued
    self._on_finish = on_finish  # (Job) -> None, for metrics
    self._jobs: dict[str, Job] = {}
    self._lock = threading.Lock()
    self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=max_concurrent, thread_name_prefix="zett-job")
    self._load_existing()

  def _load_existing(self) -> None:
    for record in sorted(self.root.glob(f"*/{RECORD_NAME}")):
      try:
        job = Job(**json.loads(record.read_text()))
      except (ValueError, TypeError):
        continue  # a record half-written by a killed server: not a job we can describe
      if not is_job_id(job.id) or job.id != record.parent.name:
        # A planted or foreign record: its id would become a path (an id of "../x" made expiry delete outside root).
        continue
      if job.status in (QUEUED, RUNNING):  # the server that ran it stopped
        job.status, job.error, job.finished_at = (
          FAILED,
          "interrupted: the server stopped before it finished",
          time.time(),
        )
        self._write(job)
      self._jobs[job.id] = job

  def _write(self, job: Job) -> None:
    folder = self.root / job.id
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{RECORD_NAME}.tmp"
    tmp.write_text(json.dumps(job.to_json(), indent=2))
    os.replace(tmp, folder / RECORD_NAME)

  def submit(
    self, kind: str, fn: Callable[[Path], tuple[Path, dict]], description: str = "", info: dict | None = None
  ) -> Job:
    """Queues `fn(work_dir) -> (folder to pack, facts)`; raises JobQueueFullError when full."""
    with self._lock:
      self._check_capacity()
      job = Job(
        id=uuid.uuid4().hex,
        kind=kind,
        status=QUEUED,
        created_at=time.time(),
        description=description,
        info=dict(info or {}),
      )
      self._jobs[job.id] = job
      self._write(job)
    self._pool.submit(self._run, job, fn)
    return dataclasses.replace(job)

  def _run(self, job: Job, fn) -> None:
    with self._lock:
      job.status, job.started_at = RUNNING, time.time()
      self._write(job)
    folder = self.root / job.id
    work = folder / "work"
    tmp = folder / f".{RESULT_NAME}.tmp"
    try:
      work.mkdir(parents=True, exist_ok=True)
      produced, facts = fn(work)
      with tarfile.open(tmp, "w") as tar:
        tar.add(produced, arcname=Path(produced).name)
      shutil.rmtree(work, ignore_errors=True)
      size = tmp.stat().st_size
      with self._lock:
        room = None if self.max_result_bytes is None else self.max_result_bytes - self._result_bytes()
        if room is not None and size > room:
          raise JobQuotaError(
            f"the result takes {size:,} bytes but only {max(room, 0):,} of the "
            f"{self.max_result_bytes:,}-byte quota for job results is free"
          )
        os.replace(tmp, folder / RESULT_NAME)
        job.info.update(facts or {})
        job.result_bytes = size
        self._finish(job, SUCCEEDED)
    except Exception as error:  # a failed job is a record, never a dead worker
      shutil.rmtree(work, ignore_errors=True)
      tmp.unlink(missing_ok=True)
      with self._lock:
        job.error = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        job.info["traceback_tail"] = traceback.format_exc(limit=3)[-2000:]
        self._finish(job, FAILED)
    if self._on_finish is not None:
      self._on_finish(job)

  def _finish(self, job: Job, status: str) -> None:
    """The job's last transition, in one step under the lock: once a client can see it finished it may delete it,
    so nothing is written for it afterwards (a late record write used to recreate a deleted job's folder)."""
    job.status, job.finished_at = status, time.time()
    self._write(job)

  def check_capacity(self) -> None:
    """Raises JobQueueFullError or JobQuotaError when `submit` would (call before costly preparation)."""
    with self._lock:
      self._check_capacity()

  def _check_capacity(self) -> None:
    self._expire()
    active = sum(j.status in (QUEUED, RUNNING) for j in self._jobs.values())
    if active >= self.max_concurrent + self.max_queued:
      raise JobQueueFullError(
        f"{active} jobs are running or queued (limit {self.max_concurrent} running + {self.max_queued} queued); "
        "retry when one finishes"
      )
    used = self._result_bytes()
    if self.max_result_bytes is not None and used >= self.max_result_bytes:
      raise JobQuotaError(
        f"finished jobs' results take {used:,} bytes, the quota is {self.max_result_bytes:,}; "
        "download and DELETE finished jobs, or wait for them to expire"
      )

  def _result_bytes(self) -> int:
    """Disk taken by kept results. Call with the lock held."""
    return sum(j.result_bytes or 0 for j in self._jobs.values() if j.status == SUCCEEDED)

  def _expire(self) -> None:
    """Deletes finished jobs past the retention period. Call with the lock held."""
    if not self.retention_s:
      return
    cutoff = time.time() - self.retention_s
    for job in [j for j in self._jobs.values() if j.finished_at is not None and j.finished_at < cutoff]:
      self._remove(job)

  def _remove(self, job: Job) -> None:
    del self._jobs[job.id]
    shutil.rmtree(self.root / job.id, ignore_errors=True)

  def delete(self, job_id: str) -> None:
    """Deletes a finished job's record and result; raises UnknownJobError or JobActiveError."""
    with self._lock:
      job = self._jobs.get(job_id) if is_job_id(job_id) else None
      if job is None:
        raise UnknownJobError(job_id)
      if job.status in (QUEUED, RUNNING):
        raise JobActiveError(f"job {job_id} is {job.status}; only finished jobs can be deleted")
      self._remove(job)

  def get(self, job_id: str) -> Job:
    with self._lock:
      self._expire()
      job = self._jobs.get(job_id) if is_job_id(job_id) else None
      if job is None:
        raise UnknownJobError(job_id)
      return dataclasses.replace(job, info=dict(job.info))

  def list(self) -> list[Job]:
    """All jobs, newest first."""
    with self._lock:
      self._expire()
      jobs = [dataclasses.replace(j, info=dict(j.info)) for j in self._jobs.values()]
    return sorted(jobs, key=lambda j: j.created_at, reverse=True)

  def result_path(self, job_id: str) -> Path:
    return self.root / self.get(job_id).id / RESULT_NAME

  def counts(self) -> dict[str, int]:
    with self._lock:
      statuses = [j.status for j in self._jobs.values()]
    return {s: statuses.count(s) for s in (QUEUED, RUNNING, SUCCEEDED, FAILED)}

  def shutdown(self, wait: bool = True) -> None:
    self._pool.shutdown(wait=wait, cancel_futures=not wait)
