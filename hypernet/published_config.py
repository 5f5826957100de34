"""Config of the hypernetworks the ZeTT authors published (`model_type: zett_hypernetwork` on the hub).

Their `config.json` is the base model's own config plus the hypernetwork arguments of their training script
(`hn_*` fields, `n_embd`, `original_vocab_size`, `separate_out_embeddings`, `pad_token_id`, `langs`/`n_langs`,
`hn_n_extra_tokens`); see `zett/model/__init__.py` (`HypernetArgs`), `train.py` and
`hf_hypernet/configuration_hypernet.py` in github.com/bminixhofer/zett. Parsing is strict: an `hn_*` field we do not
know, or an option set to a value this implementation does not compute, is an error that names it, never a silent
difference in the predictions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from zett.hypernet.io import HypernetCheckpointError

MODEL_TYPE = "zett_hypernetwork"

# Names under which their body config (RobertaConfig.from_pretrained(hn_model_name_or_path)) is roberta-base. Only its
# fixed hyperparameters are taken from it (layer-norm epsilon 1e-5, exact GELU, one token type); the sizes are
# overridden by the hn_* fields and the position table's length is read from the weights.
_ROBERTA_BASE_NAMES = ("roberta-base", "FacebookAI/roberta-base")

# hn_* options that have no effect on the architecture we implement (inter-token attention is off, see below), or
# that only steer training. Accepted whatever their value.
_INERT_OPTIONS = (
  "hn_inter_token_attention_bias_by_priors",
  "hn_inter_token_attention_bias_scaler",
  "hn_n_inter_token_blocks",
)

# Options of their code that change the computation and that no published hypernetwork uses: each must keep the
# value given here (their own PyTorch port raises NotImplementedError for most of them).
_UNSUPPORTED_UNLESS = {
  "hn_model_type": "roberta",
  "hn_embed_using_source_embeddings": True,
  "hn_embed_target_priors": False,
  "hn_add_inter_token_attention": False,
  "hn_concat_last_hidden_state": False,
  "hn_language_adapter_bottleneck_dim": 0,
}

# Options this implementation computes (read into `PublishedHypernetConfig`).
_SUPPORTED_OPTIONS = (
  "hn_model_name_or_path",
  "hn_surface_maxlen",
  "hn_n_layers",
  "hn_hidden_size",
  "hn_intermediate_size",
  "hn_num_attention_heads",
  "hn_rescale_embeddings",
  "hn_single_head",
  "hn_predict_bias",
  "hn_embed_lang_id",
  "hn_n_extra_tokens",
)

KNOWN_HN_OPTIONS = frozenset(_SUPPORTED_OPTIONS + _INERT_OPTIONS + tuple(_UNSUPPORTED_UNLESS))

# Defaults of their `HypernetArgs` dataclass for fields a config.json may leave out.
_DEFAULTS = {
  "hn_n_layers": 3,
  "hn_surface_maxlen": 16,
  "hn_rescale_embeddings": False,
  "hn_single_head": False,
  "hn_predict_bias": True,
  "hn_embed_lang_id": False,
  "hn_model_name_or_path": "out_xlmv_byte",
}


class PublishedConfigError(HypernetCheckpointError):
  """A published-hypernetwork config.json that this implementation cannot run exactly."""


@dataclasses.dataclass(frozen=True)
class PublishedHypernetConfig:
  """Shape of a published ZeTT hypernetwork; also answers the questions zett asks of any hypernetwork config
  (`embedding_dim`, `base_vocab_size`, `surface_length`, `predict_output_*`, `body_*`), so a `hypernet.Hypernetwork`
  and `hypernet.predict` take either kind."""

  embedding_dim: int
  """n_embd: width of the base model's embeddings."""
  base_vocab_size: int
  """original_vocab_size: surface ids below it index the base embeddings, ids at or above it the fallback table."""
  surface_length: int
  """hn_surface_maxlen: subtokens per target token (7 in every published model)."""
  hidden_size: int
  intermediate_size: int
  num_heads: int
  num_layers: int
  num_extra_tokens: int
  """hn_n_extra_tokens: ids the byte-level base tokenizer has beyond the base vocabulary (fallback rows)."""
  pad_token_id: int
  predict_output_embeddings: bool
  """separate_out_embeddings: the base is untied; inputs concatenate input and output rows, and a second head
  predicts output embeddings."""
  has_bias_head: bool
  """hn_predict_bias: a dense bias head exists (their code trains it for every base)."""
  rescale_embeddings: bool
  """hn_rescale_embeddings: frozen per-dimension affine rescalers on the source rows and the predictions."""
  single_head: bool
  """hn_single_head: one head predicts [input | output] rows together."""
  num_positions: int
  """Rows of the body's learned position table (514 for roberta-base)."""
  languages: tuple[str, ...] = ()
  """`langs` of the config (language-id hypernetworks): the index of a name is its language id."""
  num_languages: int = 0
  """Rows of the language-id table (hn_embed_lang_id), 0 without one."""
  language_index: int | None = None
  """The language whose id is appended as an extra position (required when num_languages > 0)."""
  source: str = ""
  """Where the config came from (folder or hub name), for messages."""
  weights_file: str = ""
  """The weights file the parameters were read from (its sha256 goes into transfer records)."""
  surface_tokenizer: str = ""
  """Their byte-level base tokenizer (tokenizer.json beside the weights): how target tokens are spelled."""

  layer_norm_eps: float = 1e-5
  """Body layer norms (roberta-base's value)."""
  projector_layer_norm_eps: float = 1e-6
  """ProjectorBlock layer norms (flax.linen.LayerNorm's default, which their Flax code used)."""
  base_weights_sha256: str = ""
  """Published hypernetworks carry no pinned base checksum; the base is checked by shape only."""
  keep_base_tokens: bool = False
  """Every non-special token is predicted (their transfer script does the same)."""

  def __post_init__(self):
    if self.hidden_size % self.num_heads:
      raise PublishedConfigError(
        f"{self.source}: hn_hidden_size {self.hidden_size} is not divisible by hn_num_attention_heads {self.num_heads}"
      )
    if self.num_languages and self.language_index is None:
      names = ", ".join(self.languages) or f"0..{self.num_languages - 1}"
      raise PublishedConfigError(
        f"{self.source}: this hypernetwork embeds a language id; name the language as SPEC@LANG (one of: {names})"
      )
    if self.language_index is not None and not 0 <= self.language_index < max(self.num_languages, 1):
      raise PublishedConfigError(
        f"{self.source}: language id {self.language_index} out of range ({self.num_languages} languages)"
      )
    if self.num_positions < self.surface_length + (self.num_languages > 0):
      raise PublishedConfigError(
        f"{self.source}: {self.num_positions} positions cannot hold {self.surface_length} subtokens"
      )

  @property
  def body_hidden_size(self) -> int:
    return self.hidden_size

  @property
  def body_num_heads(self) -> int:
    return self.num_heads

  @property
  def body_mlp_size(self) -> int:
    return self.intermediate_size

  @property
  def input_width(self) -> int:
    return self.embedding_dim * (2 if self.predict_output_embeddings else 1)

  @property
  def predict_output_bias(self) -> bool:
    """Whether predictions include an LM-head bias.

    Their bias head exists for every base, but its output only means something for a base with an LM-head bias;
    their transfer writes it into the model only then. Every published tied base (XLM-R) has one and every
    published untied base (TinyLlama, Mistral, Llama 3) has none, so the bias is predicted for tied bases only.
    """
    return self.has_bias_head and not self.predict_output_embeddings


def _require(record: Mapping[str, Any], key: str, kind, where: str):
  value = record.get(key)
  if value is None or isinstance(value, bool) != (kind is bool) or not isinstance(value, kind):
    raise PublishedConfigError(f"{where}: config.json needs {key} ({kind.__name__}), got {value!r}")
  return value


def is_published_config(record: Mapping[str, Any]) -> bool:
  return record.get("model_type") == MODEL_TYPE or any(str(k).startswith("hn_") for k in record)


def parse_published_config(
  record: Mapping[str, Any], where: str, language: str | None = None, num_positions: int = 514
) -> PublishedHypernetConfig:
  """A `PublishedHypernetConfig` from their config.json; raises PublishedConfigError naming what does not fit.

  Args:
    record: the parsed config.json.
    where: folder or hub name, for messages.
    language: a name in `langs` (or an integer index) for language-id hypernetworks.
    num_positions: rows of the position table (read from the weights by the loader).
  """
  unknown = sorted(k for k in record if str(k).startswith("hn_") and k not in KNOWN_HN_OPTIONS)
  if unknown:
    raise PublishedConfigError(
      f"{where}: unknown hypernetwork option(s) {', '.join(unknown)}: this implementation "
      "does not know what they change, so it refuses to guess"
    )
  fields = {**_DEFAULTS, **{k: v for k, v in record.items() if v is not None}}
  unsupported = [
    f"{k}={fields[k]!r} (only {v!r} is implemented)"
    for k, v in _UNSUPPORTED_UNLESS.items()
    if k in fields and fields[k] != v
  ]
  if not fields.get("hn_embed_using_source_embeddings", False):
    unsupported.append("hn_embed_using_source_embeddings must be true (subtokens read the base embeddings)")
  if fields["hn_model_name_or_path"] not in _ROBERTA_BASE_NAMES:
    unsupported.append(
      f"hn_model_name_or_path={fields['hn_model_name_or_path']!r} (the body must be configured "
      f"from {' or '.join(_ROBERTA_BASE_NAMES)})"
    )
  if fields.get("use_unigram_bias"):
    unsupported.append("use_unigram_bias=True")
  if unsupported:
    raise PublishedConfigError(f"{where}: unsupported hypernetwork option(s): {'; '.join(dict.fromkeys(unsupported))}")

  hidden = _require(fields, "hn_hidden_size", int, where)
  languages = tuple(str(x) for x in fields.get("langs") or ()) if isinstance(fields.get("langs"), list) else ()
  num_languages = 0
  if _require(fields, "hn_embed_lang_id", bool, where):
    num_languages = int(fields.get("n_langs") or len(languages))
    if num_languages <= 0:
      raise PublishedConfigError(f"{where}: hn_embed_lang_id is set but neither n_langs nor langs is")
  language_index = None
  if language is not None:
    if not num_languages:
      raise PublishedConfigError(
        f"{where}: a language ({language!r}) was given, but this hypernetwork has no language id"
      )
    if language in languages:
      language_index = languages.index(language)
    elif language.isdigit():
      language_index = int(language)
    else:
      raise PublishedConfigError(f"{where}: unknown language {language!r} (known: {', '.join(languages)})")
  return PublishedHypernetConfig(
    embedding_dim=_require(fields, "n_embd", int, where),
    base_vocab_size=_require(fields, "original_vocab_size", int, where),
    surface_length=_require(fields, "hn_surface_maxlen", int, where),
    hidden_size=hidden,
    intermediate_size=_require(fields, "hn_intermediate_size", int, where),
    num_heads=int(fields.get("hn_num_attention_heads") or hidden // 64),
    num_layers=_require(fields, "hn_n_layers", int, where),
    num_extra_tokens=int(fields.get("hn_n_extra_tokens") or 0),
    pad_token_id=_require(fields, "pad_token_id", int, where),
    predict_output_embeddings=bool(fields.get("separate_out_embeddings", False)),
    has_bias_head=_require(fields, "hn_predict_bias", bool, where),
    rescale_embeddings=_require(fields, "hn_rescale_embeddings", bool, where),
    single_head=_require(fields, "hn_single_head", bool, where),
    num_positions=num_positions,
    languages=languages,
    num_languages=num_languages,
    language_index=language_index,
    source=where,
  )
