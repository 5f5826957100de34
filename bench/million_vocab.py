"""Million-token vocabulary at the SmolLM2 width: ANN next-token selection vs the exact matrix product.

Builds (or reuses, from --workdir) a BPE vocabulary of --vocab-size tokens trained on Python stdlib
source with SmolLM2's vocabulary forced in (multi-word tokens: split only at line ends), fills its float16 store, indexes it, then measures on
real SmolLM2 hidden states (stdlib code + English licence text):

  - build times (BPE training, store, index) and the index's size on disk,
  - next-token selection latency for one hidden state: ANN + exact rescoring vs the exact
    product over the whole vocabulary (float32 in RAM, BLAS), same run, interleaved rounds,
    at several candidate counts (the recall vs speed-up curve),
  - recall@1 of the ANN choice against the exact argmax on 1,000 hidden states,
  - with --compare (always with --quick) the indexes compared on a subset of the same vectors:
    zett's norm-banded PQ, faiss PQ fast-scan with one code per dimension (query-scaled and
    not), faiss HNSW-IP, faiss IVF-IP, hnswlib, usearch (the last two only if installed), and
    with --quick also faiss HNSW over the MIPS-to-L2 reduction (slow to build),
  - generation tokens/s (ANN vs exact) and bytes per token vs the base vocabulary.

Embeddings are the FVT mean of each token's SmolLM2 subtoken embeddings (what an untrained
hypernetwork predicts): predicting 1M tokens with a trained 3-layer hypernetwork takes over an
hour on this 2-core CPU, and the speed/recall question does not depend on which predictor made
the vectors. The 1M run takes ~20-30 min on 2 shared cores (artifacts are cached in --workdir);
--quick uses 100k tokens.

  python bench/million_vocab.py [--quick] [--compare] [--workdir DIR]

Measured (2 shared cores, 1M x 576, 1,000 held-out states; exact: OpenBLAS 2 threads, ANN: 2
shard threads; 5 interleaved rounds): the build measured both layouts on 256 calibration states
(recall@1 at 1024 / 2048 / 4096 candidates: norm bands 0.980 / 0.992 / 0.992, one band 0.953 /
0.957 / 0.961) and chose norm bands (5% / 10% / 25% / 60% of rows at 1 / 1 / 4 / 8 dims per 4-bit
code) with 2048 candidates. Held out: exact 95.8 ms per token, ANN 6.74 ms, **13.3x at recall@1
1.000** (same id 0.997; the rest are ties between identical rows). Curve (candidates: recall,
speed-up): 512: 0.991, 20.5x; 768: 0.994, 17.9x; 1024: 0.996, 18.0x; 1280: 0.997, 16.3x; 2048:
1.000, 13.3x. Before the norm bands (one codebook, one code per dimension): 0.973 at 4.9x. Index
87 MiB; generation 28.4 (ANN) vs 4.1 (exact) tokens/s. Caveat: FVT-mean rows of merged tokens are
shorter than base rows, so most exact winners here are base-vocabulary tokens; the index does not
know that, but the norm bands profit from it, and the build-time measurement is what guards other
vocabularies (at 100k it keeps one band).
"""

from __future__ import annotations

import argparse
import json
import os
import sysconfig
import time
from pathlib import Path

import numpy as np

from zett.ann import EmbeddingStore, IndexMismatchError, IndexSpec, build_index, load_index
from zett.ann.build import build_vocabulary, train_bpe_vocabulary
from zett.ann.index_build import query_scale_from
from zett.tokenization import load_tokenizer


def _corpus(max_bytes: int) -> tuple[list[str], list[str], list[str]]:
  """(training, calibration, held-out documents): stdlib .py files and English licence text.

  Calibration text (for the index's query scale) and held-out text (for recall) share no document
  and no half of a licence.
  """
  root = Path(sysconfig.get_paths()["stdlib"])
  files = sorted(p for p in root.rglob("*.py") if "site-packages" not in p.parts)
  held_out_files = files[::97]
  train, total = [], 0
  for path in files:
    if path in held_out_files:
      continue
    text = path.read_text(encoding="utf-8", errors="replace")
    train.append(text)
    total += len(text)
    if total >= max_bytes:
      break
  held = [p.read_text(encoding="utf-8", errors="replace") for p in held_out_files[:40]]
  calibration = [p.read_text(encoding="utf-8", errors="replace") for p in held_out_files[40:60]]
  for english in (root / "LICENSE.txt", Path("/usr/share/common-licenses/GPL-3")):
    if english.exists():
      text = english.read_text(encoding="utf-8", errors="replace")
      calibration.append(text[:len(text) // 2])
      held.append(text[len(text) // 2:])
  return train, calibration, held


def _hidden_states(model, token_ids: list[int], count: int, window: int = 128, batch: int = 8) -> np.ndarray:
  """`count` final hidden states of the base model over consecutive windows of real text."""
  import jax
  import jax.numpy as jnp
  apply = jax.jit(lambda ids: model.module.apply({"params": model.params}, input_ids=ids,
                                                 compute_logits=False).hidden_states)
  windows = np.asarray(token_ids[:len(token_ids) // window * window], np.int32).reshape(-1, window)
  windows = windows[np.linspace(0, len(windows) - 1, -(-count // window)).astype(int)]
  states = []
  for start in range(0, len(windows), batch):
    chunk = windows[start:start + batch]
    padded = np.pad(chunk, ((0, batch - len(chunk)), (0, 0)))
    states.append(np.asarray(apply(jnp.asarray(padded)), np.float32)[:len(chunk)].reshape(-1, model.config.hidden_size))
  states = np.concatenate(states)
  return states[np.linspace(0, len(states) - 1, count).astype(int)]


_OPERATING_POINTS = (512, 768, 1024, 1280, 2048)
"""Candidate counts (rescored exactly) whose recall and speed-up the table lists."""


def _blas_threads() -> str:
  return os.environ.get("OPENBLAS_NUM_THREADS") or f"{os.cpu_count()} (default: one per core)"


def _timed(fn, repeats: int) -> float:
  """Median seconds of `fn()` over `repeats` calls."""
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def _compare_libraries(table_vd: np.ndarray, queries_bd: np.ndarray, exact_ids: np.ndarray, candidates: int,
                       threads: int, query_sample: np.ndarray,
                       with_l2_reduction: bool) -> list[tuple[str, float, float, float]]:
  """(name, build s, latency ms per query, tie-aware recall@1 after exact rescoring) per index."""
  import faiss
  results = []
  dim = table_vd.shape[1]

  exact_best = np.einsum("bd,bd->b", queries_bd, table_vd[exact_ids])

  def recall_and_latency(search):
    cand = search(queries_bd)
    scores = np.einsum("bd,bcd->bc", queries_bd, table_vd[np.maximum(cand, 0)])
    scores[cand < 0] = -np.inf
    # Tie-aware: the chosen token has the best logit (a few vocabulary rows are exact duplicates).
    recall = float(np.mean(scores.max(1) >= exact_best - 1e-4 * np.abs(exact_best)))
    latency = _timed(lambda: [search(q[None]) for q in queries_bd[:100]], 1) / 100
    return latency * 1e3, recall

  def run(name, build, search):
    start = time.perf_counter()
    built = build()
    build_s = time.perf_counter() - start
    latency_ms, recall = recall_and_latency(lambda q: search(built, q))
    results.append((name, build_s, latency_ms, recall))
    print(f"  {name:28s} build {build_s:7.1f} s  {latency_ms:7.3f} ms/query  recall@1 {recall:.3f}", flush=True)

  scale = query_scale_from(query_sample)

  def faiss_pq(weighted):
    def build():
      index = faiss.index_factory(dim, f"PQ{dim}x4fs", faiss.METRIC_INNER_PRODUCT)
      rows = table_vd * scale if weighted else table_vd
      index.train(np.ascontiguousarray(rows[:65536]))
      index.add(np.ascontiguousarray(rows))
      return index
    return build

  def zett_banded():
    import tempfile
    from zett.ann import build_store
    directory = tempfile.mkdtemp(prefix="zett_compare_")
    subset_store = build_store(directory, len(table_vd), dim, lambda r: table_vd[r.start:r.stop], f"subset{len(table_vd)}",
                               chunk_size=16384, progress=False)
    return build_index(subset_store, IndexSpec(), query_sample=query_sample, progress=False)

  run("zett norm-banded PQ fast-scan (default)", zett_banded, lambda ix, q: ix.candidates(q, 1024))
  run("faiss PQ fast-scan 1 dim/code, query-scaled", faiss_pq(True),
      lambda ix, q: ix.search(np.ascontiguousarray(q / scale), 1024)[1])
  run("faiss PQ fast-scan 1 dim/code, unscaled", faiss_pq(False), lambda ix, q: ix.search(q, 1024)[1])

  def faiss_hnsw_ip():
    index = faiss.index_factory(dim, "HNSW32_SQfp16", faiss.METRIC_INNER_PRODUCT)
    faiss.downcast_index(index).hnsw.efConstruction = 100
    index.train(table_vd)
    index.add(table_vd)
    faiss.downcast_index(index).hnsw.efSearch = 256
    return index

  run("faiss HNSW32 inner product", faiss_hnsw_ip, lambda ix, q: ix.search(q, candidates)[1])

  norms = np.linalg.norm(table_vd, axis=1)
  augmented = np.concatenate([table_vd, np.sqrt(norms.max() ** 2 - norms ** 2)[:, None]], 1).astype(np.float32)

  def faiss_hnsw_l2():
    index = faiss.index_factory(dim + 1, "HNSW32_SQfp16", faiss.METRIC_L2)
    faiss.downcast_index(index).hnsw.efConstruction = 100
    index.train(augmented)
    index.add(augmented)
    faiss.downcast_index(index).hnsw.efSearch = 256
    return index

  if with_l2_reduction:  # slow to build (50k: ~11 min on 2 shared cores), and no better
    run("faiss HNSW32 L2 reduction", faiss_hnsw_l2,
        lambda ix, q: ix.search(np.concatenate([q, np.zeros((len(q), 1), np.float32)], 1), candidates)[1])

  def faiss_ivf():
    lists = int(4 * np.sqrt(len(table_vd)))
    index = faiss.index_factory(dim, f"IVF{lists},SQfp16", faiss.METRIC_INNER_PRODUCT)
    index.train(table_vd[np.random.default_rng(0).choice(len(table_vd), min(len(table_vd), 50 * lists), False)])
    index.add(table_vd)
    faiss.extract_index_ivf(index).nprobe = 64
    return index

  run("faiss IVF-IP nprobe 64", faiss_ivf, lambda ix, q: ix.search(q, candidates)[1])

  try:
    import hnswlib

    def hnswlib_ip():
      index = hnswlib.Index(space="ip", dim=dim)
      index.init_index(max_elements=len(table_vd), M=32, ef_construction=100)
      index.add_items(table_vd, num_threads=threads)
      index.set_ef(256)
      return index

    run("hnswlib ip M32", hnswlib_ip, lambda ix, q: ix.knn_query(q, k=candidates, num_threads=1)[0].astype(np.int64))
  except ImportError:
    print("  hnswlib not installed: skipped")
  try:
    import usearch.index

    def usearch_ip():
      index = usearch.index.Index(ndim=dim, metric="ip", dtype="f16", connectivity=32, expansion_add=100,
                                  expansion_search=256)
      index.add(np.arange(len(table_vd)), table_vd, threads=threads)
      return index

    def usearch_search(ix, q):
      found = ix.search(q, candidates, threads=1)
      keys = np.asarray(found.keys, np.int64).reshape(len(q), -1)
      distances = np.asarray(found.distances).reshape(len(q), -1)
      keys[~np.isfinite(distances) | (keys >= len(table_vd))] = -1
      return keys

    run("usearch ip f16 M32", usearch_ip, usearch_search)
  except ImportError:
    print("  usearch not installed: skipped")
  return results


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--quick", action="store_true", help="100k tokens instead of 1M")
  parser.add_argument("--vocab-size", type=int, default=None)
  parser.add_argument("--workdir", default="/tmp/zett_million_vocab")
  parser.add_argument("--queries", type=int, default=1000)
  parser.add_argument("--compare", action="store_true", help="compare index libraries (always with --quick)")
  parser.add_argument("--compare-size", type=int, default=None, help="vectors for the library comparison")
  parser.add_argument("--corpus-bytes", type=int, default=None)
  parser.add_argument("--min-frequency", type=int, default=None,
                      help="BPE pair count threshold (default 1 for 1M: 60 MB of text give only 550k tokens at 2)")
  parser.add_argument("--generate-tokens", type=int, default=32)
  parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds (exact, then each ANN point)")
  args = parser.parse_args(argv)
  vocab_size = args.vocab_size or (100_000 if args.quick else 1_000_000)
  compare_size = args.compare_size or 50_000
  corpus_bytes = args.corpus_bytes or (30_000_000 if args.quick else 60_000_000)
  min_frequency = args.min_frequency or (2 if args.quick else 1)
  work = Path(args.workdir) / f"v{vocab_size}"
  work.mkdir(parents=True, exist_ok=True)
  timings_path = work / "timings.json"
  timings = json.loads(timings_path.read_text()) if timings_path.exists() else {}

  import faiss
  from zett.models.load import load_model
  print(f"vocabulary {vocab_size:,} tokens; workdir {work}; faiss threads {faiss.omp_get_max_threads()}", flush=True)
  model = load_model("smollm2-135m")
  base = model.tokenizer
  train_texts, calibration_texts, held_texts = _corpus(corpus_bytes)

  tokenizer_path = work / "bpe_tokenizer.json"
  if not tokenizer_path.exists():
    start = time.perf_counter()
    large = train_bpe_vocabulary(train_texts, vocab_size, base, multi_word=True, min_frequency=min_frequency)
    timings["bpe_train_s"] = time.perf_counter() - start
    large.backend.save(str(tokenizer_path))
    timings_path.write_text(json.dumps(timings))
  large = load_tokenizer(tokenizer_path)
  print(f"BPE vocabulary: {large.vocab_size:,} tokens ({timings.get('bpe_train_s', 0):.0f} s to train)", flush=True)

  vocab_dir = work / "vocab"
  if "store_s" not in timings:
    start = time.perf_counter()
    build_vocabulary(vocab_dir, model, large, batch_size=16384, index_spec=None)
    timings["store_s"] = time.perf_counter() - start
    timings_path.write_text(json.dumps(timings))
  store = EmbeddingStore(vocab_dir / "input")
  # The index's query scale comes from calibration text; recall is measured on other, held-out text.
  query_sample = _hidden_states(model, base.encode("\n".join(calibration_texts)), 512)
  try:
    index = load_index(store)
  except IndexMismatchError as e:  # none yet, or an older index format
    print(f"building the index ({e})", flush=True)
    start = time.perf_counter()
    build_index(store, IndexSpec(), query_sample=query_sample).save()
    timings["index_s"] = time.perf_counter() - start
    timings_path.write_text(json.dumps(timings))
    index = load_index(store)
  index_bytes = sum((store.path / name).stat().st_size for name in ("index.faiss", "index_rows.npy"))
  print(f"index layout chosen at build time: {index.calibration}", flush=True)

  held_ids = base.encode("\n".join(held_texts))
  queries = _hidden_states(model, held_ids, args.queries)
  table = np.asarray(store.table, np.float32)  # the exact competitor: float32 in RAM, one BLAS product
  exact_ids = np.concatenate([np.argmax(queries[i:i + 50] @ table.T, axis=1) for i in range(0, len(queries), 50)])
  ann_scores, ann_ids = index.topk(queries, k=1)
  recall_ids = float(np.mean(ann_ids[:, 0] == exact_ids))
  exact_best = np.einsum("bd,bd->b", queries, table[exact_ids])
  recall = float(np.mean(ann_scores[:, 0] >= exact_best - 1e-4 * np.abs(exact_best)))

  # Operating points: recall and latency per candidate count, each ANN timing interleaved with an
  # exact one (the machine is shared: the ratio within a round is what is compared).
  exact_rounds, points = [], {}
  for count in _OPERATING_POINTS:
    scores, _ = index.topk(queries, k=1, candidates=count)
    points[count] = [float(np.mean(scores[:, 0] >= exact_best - 1e-4 * np.abs(exact_best))), []]
  for _ in range(args.rounds):
    exact_rounds.append(_timed(lambda: [np.argmax(table @ q) for q in queries[:20]], 1) / 20)
    for count in _OPERATING_POINTS:
      points[count][1].append(_timed(lambda: [index.topk(q[None], k=1, candidates=count) for q in queries[:200]], 1)
                              / 200)
  exact_latency = float(np.median(exact_rounds))
  ann_latency = float(np.median(points[index.spec.candidates][1]))
  speedup = float(np.median(np.asarray(exact_rounds) / np.asarray(points[index.spec.candidates][1])))

  library_rows = []
  if args.quick or args.compare:
    print(f"index comparison on the first {compare_size:,} vectors (64 candidates, 1024 for PQ; exact rescoring):",
          flush=True)
    subset = np.ascontiguousarray(table[:compare_size])
    subset_exact = np.argmax(queries @ subset.T, axis=1)
    library_rows = _compare_libraries(subset, queries, subset_exact, 64, faiss.omp_get_max_threads(), query_sample,
                                      with_l2_reduction=args.quick)
    del subset
  del table

  from zett.ann.generate import LargeVocabGenerator
  generator = LargeVocabGenerator(model, vocab_dir)
  prompt = "def read_config(path):\n    \"\"\"Read the configuration file at path.\"\"\"\n"
  list(generator.generate(prompt, 2))  # compile outside the timing
  generation = {}
  for exact in (False, True):
    text = "".join(generator.generate(prompt, args.generate_tokens, exact=exact))
    generation[exact] = (generator.stats.tokens_per_second, generator.stats.new_bytes / generator.stats.new_tokens,
                         generator.stats.selection_seconds / generator.stats.new_tokens, text)
  held_text = "\n".join(held_texts)
  held_bytes = len(held_text.encode("utf-8"))
  large_bpt = held_bytes / len(large.encode(held_text))
  base_bpt = held_bytes / len(held_ids)

  print()
  print(f"| measure | value |")
  print(f"|---|---|")
  print(f"| vocabulary | {large.vocab_size:,} tokens x {store.dim} (float16 store {store.vocab_size * store.dim * 2 / 2**30:.2f} GiB) |")
  print(f"| build: BPE training / FVT store / index | {timings.get('bpe_train_s', 0):.0f} s / {timings['store_s']:.0f} s "
        f"/ {timings['index_s']:.0f} s |")
  print(f"| index size on disk | {index_bytes / 2**20:.0f} MiB |")
  print(f"| recall@1 vs exact ({len(queries)} held-out SmolLM2 hidden states): best logit / same id | "
        f"{recall:.4f} / {recall_ids:.4f} |")
  print(f"| bytes/token held-out text: large vs base vocabulary | {large_bpt:.2f} vs {base_bpt:.2f} "
        f"({large_bpt / base_bpt:.2f}x) |")
  for exact in (False, True):
    tps, bpt, sel, text = generation[exact]
    print(f"| generation {'exact' if exact else 'ANN'}: tokens/s, bytes/token, selection ms/token | {tps:.1f}, "
          f"{bpt:.2f}, {sel * 1e3:.1f} |")
  print(f"| generated text (ANN) | {generation[False][3][:60]!r} |")
  for name, build_s, latency_ms, lib_recall in library_rows:
    print(f"| {name} @ {compare_size:,}: build s, ms/query, recall@1 | {build_s:.1f}, {latency_ms:.3f}, {lib_recall:.3f} |")
  bands = ", ".join(f"{len(band.rows):,} rows" + (f" x {band.dim // band.shards[0].M} dims/code" if index.spec.kind == "pq"
                                                    else "") for band in index.bands)
  print(f"| index | {index.spec.kind}: {bands}; {len(index.bands[0].shards)} shards per band; "
        f"{index.spec.candidates} candidates |")
  print(f"| threads | exact: OpenBLAS {_blas_threads()}, ANN: {len(index.bands[0].shards)} shard threads "
        f"({len(queries)} queries, {args.rounds} interleaved rounds, medians) |")
  for count in _OPERATING_POINTS:
    point_recall, point_times = points[count]
    ratio = float(np.median(np.asarray(exact_rounds) / np.asarray(point_times)))
    print(f"| operating point: {count} candidates: recall@1, ms, speed-up | {point_recall:.3f}, "
          f"{np.median(point_times) * 1e3:.2f}, {ratio:.1f}x |")
  print(f"| next-token selection, exact matmul (float32, BLAS) | {exact_latency * 1e3:.2f} ms |")
  print(f"| next-token selection, ANN + exact rescoring | {ann_latency * 1e3:.2f} ms |")
  print(f"| **speed-up ANN vs exact (goal >= 10x at recall@1 >= 0.99)** | **{speedup:.1f}x** "
        f"at recall@1 {recall:.4f} |")


if __name__ == "__main__":
  main()
