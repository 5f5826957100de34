"""Text for training: `datasets` sources, mixed by weight, packed into fixed-byte chunks, held out by document.

Why pack text rather than tokens: every step tokenizes with a freshly sampled tokenizer, so a token stream cannot be
carried from one step to the next; a chunk of about `sequence_bytes` bytes per sequence fills `sequence_length` sampled
tokens (the batcher truncates/pads). Each chunk is a window of the concatenated documents of one source.

The position is plain JSON (per source: epoch, the `datasets` iterator state, the unread rest of the current document)
so a resumed run reads exactly the text it would have read. Multi-process runs (issue 10) pass `process_index` /
`process_count`: each process streams its own shard (`split_dataset_by_node`) and draws its own rows.
"""

from __future__ import annotations

import glob
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from zett.errors import ZettError
from zett.train.config import DataConfig, DataSource

_JSON_SUFFIXES = (".jsonl", ".json")
_PARQUET_SUFFIXES = (".parquet",)
_LOCAL_SUFFIXES = (".txt", ".text", ".md", ".py", ".jsonl", ".json", ".parquet")
_DOCUMENT_SEPARATOR = "\n\n"


class DataError(ZettError, ValueError):
  """A data source that cannot be read; the message names the path and the problem."""


def _looks_local(path: str) -> bool:
  return (
    path.startswith(("/", "./", "../", "~"))
    or os.path.exists(os.path.expanduser(path))
    or any(ch in path for ch in "*?[")
    or Path(path).suffix.lower() in _LOCAL_SUFFIXES
  )


# Below the stdlib folder but not its code: installed packages (pyenv and others put them there) and the test suite,
# whose data includes deliberately non-UTF-8 sources (test/encoded_modules).
_NOT_STDLIB_CODE = {"site-packages", "dist-packages", "test"}


def _expand(path: str) -> str:
  # "stdlib:NAME" = a folder/file of the Python standard library: offline text present on every machine.
  if path.startswith("stdlib:"):
    import sysconfig

    return os.path.join(sysconfig.get_paths()["stdlib"], path[len("stdlib:") :])
  return os.path.expanduser(path)


def resolve_local_files(source: DataSource) -> list[str] | None:
  """Local files of a source (sorted), None for a hub dataset name; raises DataError for a missing local path."""
  path = _expand(source.path)
  if not (source.path.startswith("stdlib:") or _looks_local(source.path)):
    return None
  if os.path.isdir(path):
    files = sorted(
      str(p)
      for p in Path(path).rglob("*")
      if p.is_file() and not p.name.startswith(".") and "__pycache__" not in p.parts
    )
  elif any(ch in path for ch in "*?["):
    files = sorted(f for f in glob.glob(path, recursive=True) if os.path.isfile(f))
  elif os.path.isfile(path):
    files = [path]
  else:
    raise DataError(f"data source {source.path}: no such file or directory")
  if source.path.startswith("stdlib:"):
    stdlib = Path(_expand("stdlib:"))
    files = [f for f in files if not _NOT_STDLIB_CODE.intersection(Path(f).relative_to(stdlib).parts)]
  if not files:
    raise DataError(f"data source {source.path}: matches no files")
  kinds = {_builder_for(f) for f in files}
  if len(kinds) > 1:
    raise DataError(f"data source {source.path}: mixes file kinds {sorted(kinds)}; give one source per kind")
  return files


def _builder_for(file: str) -> str:
  suffix = Path(file).suffix.lower()
  if suffix in _JSON_SUFFIXES:
    return "json"
  if suffix in _PARQUET_SUFFIXES:
    return "parquet"
  return "text"


def check_sources(config: DataConfig) -> None:
  """Raises DataError for a missing local path, TextFileError for a text file that starts binary or not UTF-8; cheap,
  run before any model is loaded or compiled."""
  from zett.text_files import check_text_prefix

  for source in config.sources:
    for file in resolve_local_files(source) or ():
      if _builder_for(file) == "text":
        check_text_prefix(file)


def _open_dataset(source: DataSource, process_index: int, process_count: int):
  import datasets

  files = resolve_local_files(source)
  if files is None:
    ds = datasets.load_dataset(source.path, source.hub_config, split=source.split, streaming=True)
  else:
    builder = _builder_for(files[0])
    kwargs: dict[str, Any] = {"sample_by": source.text_unit} if builder == "text" else {}
    ds = datasets.load_dataset(builder, data_files=files, split="train", streaming=True, **kwargs)
  if process_count > 1:
    from datasets.distributed import split_dataset_by_node

    ds = split_dataset_by_node(ds, rank=process_index, world_size=process_count)
  return ds


def is_heldout(text: str, heldout_permille: int) -> bool:
  """Stable split by document content: the same document is held out whatever the order or sharding."""
  bucket = int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little") % 1000
  return bucket < heldout_permille


def _cut_utf8(data: bytes, limit: int) -> int:
  """Largest cut point <= limit that does not split a UTF-8 character."""
  if limit >= len(data):
    return len(data)
  cut = limit
  while cut > 0 and (data[cut] & 0xC0) == 0x80:
    cut -= 1
  return cut


def _utf8_or_error(examples: Iterator, path: str) -> Iterator:
  """`examples`, with a decoding failure deep in a stream reported as a DataError naming the source."""
  try:
    yield from examples
  except UnicodeDecodeError as error:
    raise DataError(f"data source {path}: not UTF-8 text ({error.reason} at byte {error.start} of a file)") from None


class _PackedSource:
  """Documents of one source, concatenated and cut into chunks of at most `chunk_bytes` bytes."""

  def __init__(self, source: DataSource, config: DataConfig, heldout: bool, process_index: int, process_count: int):
    self.source = source
    self.config = config
    self.heldout = heldout
    self._dataset = _open_dataset(source, process_index, process_count)
    self._epoch = 0
    self._buffer = b""
    self._iterator: Iterator | None = None
    self._resumed = False
    self._doc_iter: Iterator[str] | None = None

  def _documents(self) -> Iterator[str]:
    while True:
      from_epoch_start = self._iterator is None and not self._resumed
      self._resumed = False
      if self._iterator is None:
        self._dataset.set_epoch(self._epoch)
        self._iterator = iter(self._dataset)
      produced = False
      for example in _utf8_or_error(self._iterator, self.source.path):
        if self.source.text_field not in example:
          raise DataError(
            f"data source {self.source.path}: no column {self.source.text_field!r} "
            f"(columns: {', '.join(example)}); set data.sources[].text_field"
          )
        text = example[self.source.text_field]
        if not text or is_heldout(text, self.config.heldout_permille) != self.heldout:
          continue
        produced = True
        yield text
      if self.heldout:
        return
      if from_epoch_start and not produced:
        raise DataError(
          f"data source {self.source.path}: no training documents "
          f"(data.heldout_permille={self.config.heldout_permille} holds them all out?)"
        )
      self._epoch += 1
      self._iterator = None

  def next_chunk(self) -> str | None:
    """The next chunk of text, or None when a held-out source runs out."""
    chunk_bytes = self.config.sequence_bytes
    if self._doc_iter is None:
      self._doc_iter = self._documents()
    while len(self._buffer) < chunk_bytes:
      try:
        text = next(self._doc_iter)
      except StopIteration:
        break
      separator = _DOCUMENT_SEPARATOR.encode() if self._buffer else b""
      self._buffer += separator + text.encode("utf-8")
    if not self._buffer:
      return None
    cut = _cut_utf8(self._buffer, chunk_bytes)
    chunk, self._buffer = self._buffer[:cut], self._buffer[cut:]
    return chunk.decode("utf-8")

  def get_state(self) -> dict[str, Any]:
    return {
      "epoch": self._epoch,
      "dataset": self._dataset.state_dict(),
      "buffer": self._buffer.decode("utf-8", errors="strict"),
    }

  def set_state(self, state: dict[str, Any]) -> None:
    self._epoch = int(state["epoch"])
    self._dataset.set_epoch(self._epoch)
    self._dataset.load_state_dict(state["dataset"])
    self._buffer = state["buffer"].encode("utf-8")
    self._iterator = None
    self._resumed = True
    self._doc_iter = None


class TextBatcher:
  """Training text, `rows_per_process` chunks per step, sources drawn by weight; exact, JSON-serialisable position."""

  def __init__(self, config: DataConfig, process_index: int = 0, process_count: int = 1):
    if config.batch_size % process_count:
      raise DataError(f"data.batch_size={config.batch_size} does not divide over {process_count} processes")
    self.config = config
    self.process_index = process_index
    self.rows_per_process = config.batch_size // process_count
    self._sources = [_PackedSource(s, config, False, process_index, process_count) for s in config.sources]
    weights = np.array([s.weight for s in config.sources], np.float64)
    self._probabilities = weights / weights.sum()
    self._step = 0

  def next_texts(self) -> list[str]:
    """This process's rows of the next batch (each a chunk of about `sequence_bytes` bytes)."""
    # The mixing draw depends only on (seed, step, process), so it needs no state of its own.
    rng = np.random.default_rng([self.config.seed, self._step, self.process_index])
    picks = rng.choice(len(self._sources), size=self.rows_per_process, p=self._probabilities)
    texts = [self._sources[i].next_chunk() for i in picks]
    self._step += 1
    return texts

  def source_names(self) -> list[str]:
    return [s.name or s.path for s in self.config.sources]

  def get_state(self) -> dict[str, Any]:
    return {"step": self._step, "sources": [s.get_state() for s in self._sources]}

  def set_state(self, state: dict[str, Any]) -> None:
    if len(state["sources"]) != len(self._sources):
      raise DataError(f"data state has {len(state['sources'])} sources, the config {len(self._sources)}")
    self._step = int(state["step"])
    for source, source_state in zip(self._sources, state["sources"]):
      source.set_state(source_state)


def heldout_texts(config: DataConfig, process_index: int = 0, process_count: int = 1) -> list[str]:
  """A fixed list of held-out chunks (up to `heldout_num_sequences`, split evenly over the sources)."""
  per_source = max(1, config.heldout_num_sequences // len(config.sources))
  texts = []
  for source in config.sources:
    packed = _PackedSource(source, config, True, process_index, process_count)
    for _ in range(per_source):
      chunk = packed.next_chunk()
      if chunk is None:
        break
      texts.append(chunk)
  if not texts:
    raise DataError(f"no held-out documents in any source (data.heldout_permille={config.heldout_permille})")
  return texts[: config.heldout_num_sequences]
