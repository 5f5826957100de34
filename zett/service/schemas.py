"""Request and response bodies of the HTTP API (they make the OpenAPI schema)."""

from __future__ import annotations

from typing import Annotated, Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, StringConstraints


class _Strict(BaseModel):
  # Unknown fields are a client bug worth reporting, not something to drop silently.
  model_config = ConfigDict(extra="forbid")


class ErrorBody(BaseModel):
  type: str = Field(description="Machine-readable error kind, e.g. invalid_json, unauthorized, too_many_tokens.")
  message: str = Field(description="What is wrong, in words.")
  details: Any = Field(default=None, description="Per-field problems for validation errors.")


class ErrorResponse(BaseModel):
  error: ErrorBody


class Health(BaseModel):
  status: Literal["ok"]
  model: str
  embedding_dim: int
  uptime_s: float


class TokenEmbedding(BaseModel):
  token: str
  input: list[float] | str
  output: list[float] | str | None = None
  bias: float | None = None


class EmbeddingsResponse(BaseModel):
  model: str
  embedding_dim: int
  encoding: str
  data: list[TokenEmbedding]
  num_tokens: int


class TokenizedText(BaseModel):
  tokens: list[str] = Field(description="Merged tokens as text (bytes that are not UTF-8 shown as U+FFFD).")
  ids: list[int] = Field(description="Base ids, or base_vocab_size + k for new_tokens[k].")


class NewToken(BaseModel):
  id: int
  token: str
  surface_ids: list[int]
  input_embedding: str | None = None


class TokenizeResponse(BaseModel):
  data: list[TokenizedText]
  new_tokens: list[NewToken]
  num_base_tokens: int
  num_tokens: int
  reduction: float
  num_merges: int
  stop_reason: str


class TransferRequest(_Strict):
  tokenizer: dict[str, Any] = Field(description="The target tokenizer: the contents of a Hugging Face tokenizer.json.")
  name: str = Field(default="uploaded-tokenizer", max_length=200, description="Name for the model card.")


class JobInfo(BaseModel):
  id: str
  kind: str
  status: Literal["queued", "running", "succeeded", "failed"]
  created_at: float
  description: str = ""
  started_at: float | None = None
  finished_at: float | None = None
  error: str | None = None
  result_bytes: int | None = None
  info: dict[str, Any] = Field(default_factory=dict)
  result_url: str | None = None


class JobList(BaseModel):
  jobs: list[JobInfo]


class RequestModels(NamedTuple):
  embeddings: type[BaseModel]
  tokenize: type[BaseModel]
  generate: type[BaseModel]


_Text = Annotated[str, StringConstraints(min_length=1)]


def request_models(settings, large_vocabulary: bool = False) -> RequestModels:
  """Request bodies whose limits come from the service settings, so the OpenAPI schema states them.

  `vocabulary="large"` is in the schema only when the server has a large vocabulary to offer.
  """
  vocabularies = Literal["base", "large"] if large_vocabulary else Literal["base"]

  class EmbeddingsRequest(_Strict):
    tokens: list[Annotated[str, StringConstraints(min_length=1, max_length=settings.max_token_chars)]] = Field(
      min_length=1, max_length=settings.max_tokens_per_request, description="Token strings (UTF-8 text, e.g. ' hello')."
    )
    encoding: Literal["float", "base64"] = Field(
      default="float", description="'float': JSON numbers; 'base64': little-endian float32 bytes, base64."
    )

  class TokenizeRequest(_Strict):
    texts: list[_Text] = Field(
      min_length=1,
      max_length=settings.max_texts_per_request,
      description="The batch: merges are counted over all of it.",
    )
    target_reduction: float | None = Field(
      default=None, ge=0.0, lt=1.0, description="Stop once the batch is this fraction shorter (e.g. 0.2)."
    )
    max_merges: int | None = Field(default=None, ge=0, description="Merge budget.")
    min_frequency: int = Field(default=1, ge=1, description="Never merge a pair seen fewer times.")
    max_token_length: int | None = Field(
      default=None,
      ge=1,
      description="Never make a token of more base tokens than this; default: the "
      "hypernetwork's surface length L, so every new token's embedding sees its whole spelling.",
    )
    embeddings: bool = Field(default=False, description="Also return input embeddings of the new tokens (base64).")

  class GenerateRequest(_Strict):
    prompt: _Text
    max_new_tokens: int = Field(default=min(32, settings.max_new_tokens), ge=1, le=settings.max_new_tokens)
    temperature: float = Field(default=0.0, ge=0.0, le=100.0, description="0 = greedy.")
    seed: int = Field(default=0, ge=0, lt=2**31)
    # Which values the server takes is known only when it starts; pyright cannot check a type made at run time.
    vocabulary: vocabularies = Field(  # pyright: ignore[reportInvalidTypeForm]
      default="base", description="'base': the base model's own vocabulary; 'large': an ANN-indexed vocabulary."
    )
    stop_at_eos: bool = True

  return RequestModels(EmbeddingsRequest, TokenizeRequest, GenerateRequest)
