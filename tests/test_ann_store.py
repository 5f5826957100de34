"""The memory-mapped embedding store: content, resume after interruption, bounded memory, bad files."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from zett.ann import EmbeddingStore, StoreError, build_store, vocabulary_sha256

VOCAB = [f"tok{i}" for i in range(1000)]
SHA = vocabulary_sha256(VOCAB)


def _rows(token_range, dim=24):
  """Deterministic rows that differ per token (so a misplaced chunk changes the table)."""
  ids = np.arange(token_range.start, token_range.stop, dtype=np.float32)[:, None]
  return np.sin(ids * 0.37 + np.arange(dim, dtype=np.float32)[None, :] * 0.11) * (1 + ids / 500)


def test_build_writes_every_row_as_float16(tmp_path):
  store = build_store(tmp_path / "s", len(VOCAB), 24, _rows, SHA, chunk_size=128, progress=False)
  np.testing.assert_array_equal(np.asarray(store.table), _rows(range(1000)).astype(np.float16))
  assert store.manifest.complete and store.manifest.num_chunks == 8 and len(store.manifest.chunk_sha256) == 8
  np.testing.assert_array_equal(store.rows(np.array([[3, 999]])), _rows(range(1000))[[[3, 999]]].astype(np.float16))
  # A plain .npy file: readable by numpy alone.
  assert np.load(tmp_path / "s" / "embeddings.npy").shape == (1000, 24)
  EmbeddingStore(tmp_path / "s", verify=True)


def test_interrupted_build_resumes_to_identical_content(tmp_path):
  calls = []

  def failing(token_range):
    calls.append(token_range.start)
    if token_range.start >= 384:
      raise KeyboardInterrupt("simulated kill")
    return _rows(token_range)

  with pytest.raises(KeyboardInterrupt):
    build_store(tmp_path / "s", len(VOCAB), 24, failing, SHA, chunk_size=128, progress=False)
  manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
  assert manifest["rows_completed"] == 384
  with pytest.raises(StoreError, match="incomplete"):
    EmbeddingStore(tmp_path / "s")

  resumed_calls = []

  def counting(token_range):
    resumed_calls.append(token_range.start)
    return _rows(token_range)

  resumed = build_store(tmp_path / "s", len(VOCAB), 24, counting, SHA, chunk_size=128, progress=False)
  assert resumed_calls == [384, 512, 640, 768, 896]  # completed chunks are not recomputed
  fresh = build_store(tmp_path / "f", len(VOCAB), 24, _rows, SHA, chunk_size=128, progress=False)
  np.testing.assert_array_equal(np.asarray(resumed.table), np.asarray(fresh.table))
  assert resumed.manifest.chunk_sha256 == fresh.manifest.chunk_sha256


def test_resume_detects_corrupted_completed_chunk(tmp_path):
  def failing(token_range):
    if token_range.start >= 512:
      raise RuntimeError("killed")
    return _rows(token_range)

  with pytest.raises(RuntimeError):
    build_store(tmp_path / "s", len(VOCAB), 24, failing, SHA, chunk_size=128, progress=False)
  table = np.load(tmp_path / "s" / "embeddings.npy", mmap_mode="r+")
  table[200, 3] += 1
  table.flush()
  del table
  with pytest.raises(StoreError, match=r"rows 128\.\.256 do not match"):
    build_store(tmp_path / "s", len(VOCAB), 24, _rows, SHA, chunk_size=128, progress=False)


def test_resume_refuses_another_vocabulary(tmp_path):
  build_store(tmp_path / "s", len(VOCAB), 24, _rows, SHA, chunk_size=128, progress=False)
  other = vocabulary_sha256(VOCAB[:-1] + ["different"])
  with pytest.raises(StoreError, match="vocab_sha256"):
    build_store(tmp_path / "s", len(VOCAB), 24, _rows, other, chunk_size=128, progress=False)


def test_truncated_and_missing_store_give_clear_errors(tmp_path):
  build_store(tmp_path / "s", len(VOCAB), 24, _rows, SHA, chunk_size=128, progress=False)
  path = tmp_path / "s" / "embeddings.npy"
  path.write_bytes(path.read_bytes()[:-100])
  with pytest.raises(StoreError, match="truncated"):
    EmbeddingStore(tmp_path / "s")
  with pytest.raises(StoreError, match="no store manifest"):
    EmbeddingStore(tmp_path / "nothing")
  (tmp_path / "s" / "manifest.json").write_text("{not json")
  with pytest.raises(StoreError, match="malformed"):
    EmbeddingStore(tmp_path / "s")


def test_embed_fn_shape_is_checked(tmp_path):
  with pytest.raises(ValueError, match="expected"):
    build_store(tmp_path / "s", len(VOCAB), 24, lambda r: np.zeros((len(r), 23)), SHA, chunk_size=128,
                progress=False)


def test_building_a_store_larger_than_the_memory_limit(tmp_path):
  """Under an address-space limit well below the table size, building still works (and a full copy cannot)."""
  script = textwrap.dedent(f"""
      import resource, sys
      import numpy as np, psutil
      from zett.ann.store import build_store, EmbeddingStore
      vocab, dim = 393216, 1024          # 768 MiB of float16
      table_bytes = vocab * dim * 2
      proc = psutil.Process()
      limit = proc.memory_info().vms + 256 * 2**20
      resource.setrlimit(resource.RLIMIT_AS, (limit, resource.RLIM_INFINITY))
      try:
        np.ones((vocab, dim), np.float16)
        sys.exit("a full copy fit under the limit: the test proves nothing")
      except MemoryError:
        pass
      base_rss = proc.memory_info().rss
      peak_growth = 0
      def embed(r):
        global peak_growth
        peak_growth = max(peak_growth, proc.memory_info().rss - base_rss)
        return np.full((len(r), dim), r.start % 251, np.float32)
      build_store({str(tmp_path / "big")!r}, vocab, dim, embed, "x" * 64, chunk_size=16384, progress=False)
      assert peak_growth < table_bytes / 8, (peak_growth, table_bytes)
      resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
      store = EmbeddingStore({str(tmp_path / "big")!r}, verify=True)
      assert store.table[-1, 0] == (vocab - 16384) % 251
      print("peak_growth_mib", peak_growth / 2**20)
  """)
  result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stdout + result.stderr
  assert "peak_growth_mib" in result.stdout


def test_rows_convert_every_float16_value_exactly(tmp_path):
  """`rows` converts through a lookup table: it must match numpy's cast bit for bit (subnormals, -0, extremes)."""
  finite = np.arange(1 << 16, dtype=np.uint16).view(np.float16)
  finite = finite[np.isfinite(finite)]
  table = np.resize(finite, (len(finite) // 16 + 1) * 16).reshape(-1, 16)
  vocab = [f"v{i}" for i in range(len(table))]
  store = build_store(tmp_path / "all", len(table), 16, lambda r: table[r.start:r.stop], vocabulary_sha256(vocab),
                      chunk_size=1024, progress=False)
  ids = np.arange(len(table) // 2 * 2)[::-1].reshape(-1, 2)
  rows = store.rows(ids)
  assert rows.dtype == np.float32 and rows.shape == (*ids.shape, 16)
  np.testing.assert_array_equal(rows.view(np.uint32), table[ids].astype(np.float32).view(np.uint32))
