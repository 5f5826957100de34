"""The training run's config: frozen dataclasses, one YAML file plus dotted overrides.

Load with `load_train_config(path, overrides)` (a thin wrapper over `zett.config.load`); unknown keys and broken
invariants raise `zett.config.ConfigError` before any model is loaded or compiled.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal

from zett import config as zett_config
from zett.config import ConfigError, check_range
from zett.tokenization import PRETOKEN_PATTERNS
from zett.tokenization.surface import DEFAULT_SURFACE_LENGTH


@dataclasses.dataclass(frozen=True)
class DataSource:
  """One text source; several sources are mixed by weight (languages, domains)."""

  path: str
  """A local file, directory or glob (.txt/.jsonl/.json/.parquet; other suffixes read as text), "stdlib:NAME" (a
  file/folder of the Python standard library, offline text), or a Hugging Face hub dataset name (streamed)."""
  weight: float = 1.0
  """Relative sampling weight of this source when several are mixed."""
  name: str = ""
  """Label used in metrics (e.g. a language code); defaults to the path."""
  text_field: str = "text"
  """Column holding the text in jsonl/parquet/hub datasets."""
  split: str = "train"
  """Split of a hub dataset."""
  hub_config: str | None = None
  """Config name of a hub dataset (e.g. a language), if it has several."""
  text_unit: Literal["document", "paragraph", "line"] = "document"
  """What one document is in a .txt file: the whole file, a blank-line-separated paragraph, or a line."""

  def __post_init__(self):
    if not self.path:
      raise ConfigError("data.sources[].path must not be empty")
    if not self.weight > 0:
      raise ConfigError(f"data source {self.path}: weight must be > 0, got {self.weight}")


@dataclasses.dataclass(frozen=True)
class DataConfig:
  sources: tuple[DataSource, ...] = ()
  """Text sources, mixed by weight."""
  batch_size: int = 4
  """Sequences per optimiser micro-step, over all processes."""
  sequence_length: int = 64
  """Tokens per sequence under the sampled tokenizer (longer texts are truncated, shorter ones padded)."""
  bytes_per_sequence: int = 0
  """UTF-8 bytes of packed text per sequence; 0 = 4 x sequence_length (about one sampled token per 4 bytes)."""
  heldout_permille: int = 20
  """Documents whose content hash falls in this many of 1000 buckets are held out (split by document, stable)."""
  heldout_num_sequences: int = 16
  """Held-out sequences used by periodic evaluation."""
  seed: int = 0
  """Seed of the source-mixing draw (the text order itself is the sources' own order)."""
  shards: int = 0
  """Logical data shards (`train.distributed`), each read by one process; 0 = one per process. Fix it (to a multiple
  of every process count you will use) to get the same global batches, and to resume, on any process count."""

  def __post_init__(self):
    if self.shards < 0:
      raise ConfigError(f"data.shards must be >= 0, got {self.shards}")
    if not self.sources:
      raise ConfigError("data.sources: at least one text source is required")
    if self.batch_size < 1 or self.sequence_length < 2:
      raise ConfigError("data.batch_size must be >= 1 and data.sequence_length >= 2")
    if not 0 <= self.heldout_permille < 1000:
      raise ConfigError(f"data.heldout_permille must be in [0, 1000), got {self.heldout_permille}")
    # Upper bounds catch typos (an extra few zeros) before anything is allocated from them.
    check_range("data.batch_size", self.batch_size, 1, 1 << 16)
    check_range("data.sequence_length", self.sequence_length, 2, 1 << 20)
    check_range("data.bytes_per_sequence", self.bytes_per_sequence, 0, 1 << 26)
    check_range("data.heldout_num_sequences", self.heldout_num_sequences, 0, 1 << 20)
    check_range("data.shards", self.shards, 0, 1 << 16)

  @property
  def sequence_bytes(self) -> int:
    return self.bytes_per_sequence or 4 * self.sequence_length


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  base: str = "smollm2-135m"
  """Frozen base model: "smollm2-135m", a local Hugging Face folder, a .gguf file, a hub name, or a random tiny test
  base "tiny-llama[:seed]" / "tiny-xlmr[:seed]" (`zett.testing.tiny`)."""
  tokenizer: str | None = None
  """The base's tokenizer (any `zett.tokenization.load_tokenizer` spec); default: the one the base ships with."""
  param_dtype: Literal["float32", "bfloat16"] = "float32"
  """Dtype the frozen base weights are stored in on device."""
  compute_dtype: Literal["float32", "bfloat16"] = "float32"
  """Dtype of the forward/backward computation (hypernetwork master weights stay float32)."""
  objective: Literal["auto", "causal", "masked"] = "auto"
  """LM loss: next-token for decoders, masked-LM for encoders; "auto" follows the base family."""
  mlm_probability: float = 0.15
  """Share of real tokens masked for the masked-LM loss."""

  def __post_init__(self):
    if not 0 < self.mlm_probability < 1:
      raise ConfigError(f"model.mlm_probability must be in (0, 1), got {self.mlm_probability}")


@dataclasses.dataclass(frozen=True)
class HypernetSection:
  """What the run sets of the hypernetwork; base-derived fields (width, base id/sha) are filled in at start-up."""

  num_layers: int = 3
  """Transformer encoder layers of the hypernetwork body."""
  surface_max_length: int = DEFAULT_SURFACE_LENGTH
  """Base subtokens per target token (L)."""
  options: dict[str, Any] = dataclasses.field(default_factory=dict)
  """Further `HypernetConfig` fields by name (checked against it at start-up)."""
  init_checkpoint: str | None = None
  """Start from a saved hypernetwork (`hypernet.io` folder) instead of the heuristic initialisation."""
  aux_loss_weight: float = 0.5
  """Weight of the loss pulling tokens that exist in the base vocabulary toward their original embeddings (no effect
  with `options.keep_base_tokens`, the default, which copies those rows exactly)."""
  encoder_buckets: tuple[tuple[int, int], ...] = ()
  """`[[max_length, capacity], ...]`: run the encoder only on batch-vocabulary rows that need it, packed by surface
  length (see `hypernet.model.Hypernet`); negatives beyond a bucket's capacity are left out of that step's softmax.
  Empty: every row padded to `surface_max_length` (the reference path; same predictions, more compute)."""

  def __post_init__(self):
    if any(len(bucket) != 2 or bucket[0] < 1 or bucket[1] < 1 for bucket in self.encoder_buckets):
      raise ConfigError(
        f"hypernet.encoder_buckets: each bucket is [max_length >= 1, capacity >= 1], got "
        f"{[list(b) for b in self.encoder_buckets]}"
      )
    if self.num_layers < 0 or self.surface_max_length < 1:
      raise ConfigError("hypernet.num_layers must be >= 0 and hypernet.surface_max_length >= 1")
    if self.aux_loss_weight < 0:
      raise ConfigError(f"hypernet.aux_loss_weight must be >= 0, got {self.aux_loss_weight}")
    check_range("hypernet.num_layers", self.num_layers, 0, 256)
    check_range("hypernet.surface_max_length", self.surface_max_length, 1, 256)


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
  """The per-batch tokenizer sampler (UnigramLM with noisy substring-frequency scores)."""

  vocab_size: int = 32768
  """Pieces of each sampled tokenizer (all 256 byte pieces are always present)."""
  batch_vocab_size: int = 0
  """Static size of the per-step embedded vocabulary (tokens of the batch + sampled negatives); 0 = vocab_size."""
  noise_std: float = 1.0
  """Std of the log-normal noise on the piece scores."""
  history_batches: int = 16
  """Substring frequencies are counted over this many recent batches."""
  weight_negatives: bool = False
  """Sampled-softmax correction: each negative row of the batch vocabulary stands for all the unused tokens it was
  drawn from (its logit gets + log(1 / its chance of being drawn)), so the loss estimates the whole sampled
  vocabulary's softmax rather than a softmax over `batch_vocab_size` rows, whose few negatives barely punish
  predicted rows that score too high. Off: the plain batch-vocabulary softmax."""
  pretokenizers: tuple[str, ...] = ("gpt2",)
  """Pre-token splits the sampled tokenizers use, one drawn per batch: `gpt2` (the base's own: punctuation never
  joins letters) and/or `cl100k` (GPT-4's, as in most recent byte-level BPEs: "(self", ".get", "):\\n", digits in
  threes). A real tokenizer with another split than the base's has pieces a `gpt2`-only hypernetwork never saw."""
  options: dict[str, Any] = dataclasses.field(default_factory=dict)
  """Further sampler options by name (passed through to `TokenizerSampler`)."""
  seed: int = 0
  """Seed of the training tokenizer sampler (the evaluation sampler uses seed + 1)."""

  def __post_init__(self):
    if self.vocab_size < 257:
      raise ConfigError(f"sampler.vocab_size must exceed the 256 byte pieces, got {self.vocab_size}")
    if self.batch_vocab_size < 0 or self.history_batches < 1:
      raise ConfigError("sampler.batch_vocab_size must be >= 0 and sampler.history_batches >= 1")
    check_range("sampler.vocab_size", self.vocab_size, 257, 1 << 24)
    check_range("sampler.history_batches", self.history_batches, 1, 1 << 16)
    check_range("sampler.noise_std", self.noise_std, 0, 100)
    if not self.pretokenizers or any(name not in PRETOKEN_PATTERNS for name in self.pretokenizers):
      names = sorted(PRETOKEN_PATTERNS)
      raise ConfigError(f"sampler.pretokenizers: a non-empty list of {names}, got {list(self.pretokenizers)}")


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  learning_rate: float = 6e-5
  """Peak learning rate."""
  warmup_steps: int = 2000
  """Optimiser updates of linear warmup from 0 to the peak learning rate."""
  schedule: Literal["cosine", "constant"] = "cosine"
  """Learning rate after warmup: cosine decay to the end ratio, or constant (see `decay_steps`)."""
  end_learning_rate_ratio: float = 0.0
  """Final learning rate as a share of the peak (cosine, and the end of a constant schedule's decay)."""
  decay_steps: int = 0
  """Constant schedule only: decay linearly to the end ratio over the last `decay_steps` of `num_train_steps`
  (warmup-stable-decay), so a training leg of known length ends annealed. 0 keeps the rate constant throughout."""
  b1: float = 0.9
  """AdamW first-moment decay."""
  b2: float = 0.95
  """AdamW second-moment decay."""
  eps: float = 1e-8
  """AdamW epsilon."""
  weight_decay: float = 0.01
  """AdamW decoupled weight decay, on matrices only (not norms, biases or position tables)."""
  max_grad_norm: float = 0.1
  """Global-norm gradient clipping threshold (0 disables)."""
  grad_accumulation_steps: int = 1
  """Micro-batches per optimiser update (optax.MultiSteps)."""

  def __post_init__(self):
    if self.learning_rate <= 0 or self.warmup_steps < 0 or self.grad_accumulation_steps < 1:
      raise ConfigError("optimizer: learning_rate must be > 0, warmup_steps >= 0, grad_accumulation_steps >= 1")
    if not (0 <= self.b1 < 1 and 0 <= self.b2 < 1):
      raise ConfigError("optimizer.b1 and optimizer.b2 must be in [0, 1)")
    check_range("optimizer.learning_rate", self.learning_rate, 0, 10)
    check_range("optimizer.end_learning_rate_ratio", self.end_learning_rate_ratio, 0, 1)
    check_range("optimizer.eps", self.eps, 0, 1)
    check_range("optimizer.weight_decay", self.weight_decay, 0, 100)
    check_range("optimizer.max_grad_norm", self.max_grad_norm, 0, 1e6)
    check_range("optimizer.grad_accumulation_steps", self.grad_accumulation_steps, 1, 1 << 16)
    check_range("optimizer.warmup_steps", self.warmup_steps, 0, 1 << 40)
    check_range("optimizer.decay_steps", self.decay_steps, 0, 1 << 40)
    if self.decay_steps and self.schedule != "constant":
      raise ConfigError("optimizer.decay_steps applies to schedule=constant only (cosine decays over the whole run)")


@dataclasses.dataclass(frozen=True)
class MeshConfig:
  data: int = -1
  """Size of the "data" axis; -1 = all devices not used by "model"."""
  model: int = 1
  """Size of the "model" axis (tensor parallelism over hidden/vocab dimensions)."""
  rules: Literal["default", "replicated"] = "default"
  """Which logical-axis rules table (`train.mesh`) maps parameter names to mesh axes."""
  min_sharded_size: int = 2**16
  """Parameters with at least this many elements must be sharded by a rule (start-up check; 0 disables)."""

  def __post_init__(self):
    if self.model < 1 or (self.data < 1 and self.data != -1):
      raise ConfigError(f"mesh: model must be >= 1 and data >= 1 or -1, got data={self.data} model={self.model}")


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
  directory: str = ""
  """Where orbax checkpoints go; "" = <run_dir>/checkpoints."""
  save_every_steps: int = 1000
  """In optimiser updates (checkpoints are labelled by micro-step, so a SIGTERM save mid-accumulation is exact)."""
  max_to_keep: int = 3
  """Rolling checkpoints kept; those at multiples of `keep_every_steps` are kept on top of these."""
  keep_every_steps: int = 0
  """Keep every checkpoint at a multiple of this many optimiser updates for good (0: only the rolling ones)."""
  save_every_minutes: float = 0.0
  """Also save when this much wall time passed since the last save (preemptible machines); 0 disables."""
  save_on_sigterm: bool = True
  """On SIGTERM, save a checkpoint at the current step and stop (resume with --resume)."""
  async_save: bool = False
  """Write in a background thread (faster on accelerators; off by default so CPU runs stay simple)."""

  def __post_init__(self):
    if self.save_every_steps < 1 or self.max_to_keep < 1:
      raise ConfigError("checkpoint.save_every_steps and checkpoint.max_to_keep must be >= 1")
    if self.keep_every_steps < 0 or self.save_every_minutes < 0:
      raise ConfigError("checkpoint.keep_every_steps and checkpoint.save_every_minutes must be >= 0")


@dataclasses.dataclass(frozen=True)
class EvalConfig:
  every_steps: int = 1000
  """Held-out evaluation interval in optimiser updates (also run at step 0 and at the end); 0 disables."""
  heldout_tokenizers: tuple[str, ...] = ()
  """Fixed tokenizers (any `zett.tokenization.load_tokenizer` spec) evaluated on the held-out text."""
  num_sampled_tokenizers: int = 1
  """Freshly sampled tokenizers evaluated on the held-out text (fixed seeds, so comparable across steps)."""
  include_base_tokenizer: bool = True
  """Also evaluate the base model's own tokenizer through the hypernetwork."""
  vocab_chunk_rows: int = 8192
  """Vocabulary rows the hypernetwork embeds at once during evaluation (bounds memory for large tokenizers)."""

  def __post_init__(self):
    if self.every_steps < 0 or self.num_sampled_tokenizers < 0 or self.vocab_chunk_rows < 1:
      raise ConfigError("eval.every_steps, eval.num_sampled_tokenizers must be >= 0 and eval.vocab_chunk_rows >= 1")
    check_range("eval.vocab_chunk_rows", self.vocab_chunk_rows, 1, 1 << 24)
    check_range("eval.num_sampled_tokenizers", self.num_sampled_tokenizers, 0, 1024)


@dataclasses.dataclass(frozen=True)
class LoggingConfig:
  metrics_file: str = ""
  """JSONL metrics; "" = <run_dir>/metrics.jsonl."""
  tensorboard: bool = True
  """Also write TensorBoard scalars when a writer package is installed."""
  every_steps: int = 10
  """Metrics interval in micro-steps (the host waits for the device only here)."""
  progress_bar: bool = True
  """Show a progress bar (process 0 only)."""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  data: DataConfig
  model: ModelConfig = ModelConfig()
  hypernet: HypernetSection = HypernetSection()
  sampler: SamplerConfig = SamplerConfig()
  optimizer: OptimizerConfig = OptimizerConfig()
  mesh: MeshConfig = MeshConfig()
  checkpoint: CheckpointConfig = CheckpointConfig()
  eval: EvalConfig = EvalConfig()
  logging: LoggingConfig = LoggingConfig()
  run_dir: str = "runs/default"
  """Everything the run writes (checkpoints, metrics, resolved config, final hypernetwork)."""
  num_train_steps: int = 1000
  """Optimiser updates (each is `optimizer.grad_accumulation_steps` micro-batches)."""
  seed: int = 0
  """Seed of hypernetwork initialisation and of the per-step RNG (step number folded in)."""
  remat: bool = False
  """Rematerialise: keep only each layer's input during the forward pass and recompute the layer in the backward pass,
  in the frozen base and in the hypernetwork. Cuts activation memory to about one layer's worth for roughly a third
  more compute per step; results are the same up to float rounding."""
  base_matmul_dtype: Literal["float32", "bfloat16", "auto"] | None = None
  """Input dtype of the frozen base's dense products in training steps, accumulating in float32 (None:
  `model.compute_dtype`). "bfloat16" under float32 compute rounds only the products' inputs; norms, softmax and
  the hypernetwork stay float32, and held-out evaluation keeps `model.compute_dtype`. Pays where bfloat16
  products are fast: a 2-core Sapphire Rapids CPU (AMX) multiplies them ~5x faster than float32 ones, while on a
  CPU without AMX a step is slower with them (Ice Lake: 6.1 s against 5.5 s). "auto": bfloat16 on GPUs and TPUs
  and on CPUs that list `amx_bf16`, else None (`train.setup.base_matmul_dtype`)."""

  def __post_init__(self):
    check_range("num_train_steps", self.num_train_steps, 1, 1 << 40)
    if self.sampler.batch_vocab_size and self.sampler.batch_vocab_size > self.sampler.vocab_size + 512:
      raise ConfigError("sampler.batch_vocab_size cannot exceed sampler.vocab_size (plus special tokens)")

  @property
  def checkpoint_dir(self) -> Path:
    return Path(self.checkpoint.directory or Path(self.run_dir) / "checkpoints").absolute()

  @property
  def metrics_path(self) -> Path:
    return Path(self.logging.metrics_file or Path(self.run_dir) / "metrics.jsonl")

  @property
  def num_micro_steps(self) -> int:
    return self.num_train_steps * self.optimizer.grad_accumulation_steps


def load_train_config(path: str | Path | None, overrides: list[str] | None = None) -> TrainConfig:
  """Loads a `TrainConfig` from YAML plus `a.b=value` overrides; relative data paths resolve from the CWD."""
  return zett_config.load(TrainConfig, path, overrides)


def to_dict(config: TrainConfig) -> dict[str, Any]:
  return zett_config.to_dict(config)


def from_dict(data: dict[str, Any]) -> TrainConfig:
  return zett_config.from_dict(TrainConfig, data, where="config")
