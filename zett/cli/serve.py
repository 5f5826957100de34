"""`zett serve`: its options, settings and engine loading, then the HTTP server."""

from __future__ import annotations

import argparse
import dataclasses
import os

from zett.cli._options import add_options, load_options, option
from zett.config import check_ranges
from zett.errors import UsageError
from zett.service.settings import ServiceSettings


@dataclasses.dataclass(frozen=True)
class ServeOptions(ServiceSettings):
  """What `zett serve` loads and where it listens, plus every service setting (`ServiceSettings`), so a serve.yaml
  of settings alone stays valid."""

  model: str = option("", required=True)
  """Base model: Hugging Face folder, .gguf file, smollm2-135m, a hub name, or tiny-random[:HIDDEN[:LAYERS]] (a
  random demo model with a random hypernetwork of LAYERS layers; default 64 and 1)."""
  hypernet: str | None = None
  """Hypernetwork folder (from `zett train`) or published name; optional only for tiny-random."""
  vocabulary: str | None = None
  """Large-vocabulary folder from `zett.ann.build` (enables vocabulary='large' in /v1/generate)."""
  host: str = "127.0.0.1"
  """Address to listen on (default: loopback only); it joins allowed_hosts."""
  port: int = option(8000, low=1, high=65535)
  """Port to listen on."""
  api_key: str | None = None
  """Require 'Authorization: Bearer KEY' on every endpoint but /healthz and the schema. The flag wins over
  $ZETT_API_KEY, which wins over the --config file and api_key=KEY (default: none)."""

  def __post_init__(self):
    super().__post_init__()
    check_ranges(self)


def add_arguments(parser: argparse.ArgumentParser) -> None:
  add_options(parser, ServeOptions)


def load_settings(args: argparse.Namespace) -> ServiceSettings:
  # A key given but empty (`--api-key "$UNSET"`) is a mistake, never "no key": it would start an open server.
  flag_key, env_key = getattr(args, "api_key", None), os.environ.get("ZETT_API_KEY")
  for source, given in (("--api-key", flag_key), ("ZETT_API_KEY", env_key)):
    if given is not None and not given.strip():
      raise UsageError(
        f"{source} is empty or blank (an unset shell variable?); give a key, or leave {source} out to serve without one"
      )
  options: ServeOptions = load_options(ServeOptions, args)
  api_key = flag_key if flag_key is not None else env_key if env_key is not None else options.api_key
  hosts = options.allowed_hosts
  if options.host not in ("0.0.0.0", "::", "") and options.host.lower() not in hosts:  # the address it listens on
    hosts = (*hosts, options.host.lower())
  settings = {field.name: getattr(options, field.name) for field in dataclasses.fields(ServiceSettings)}
  return ServiceSettings(**{**settings, "api_key": api_key, "allowed_hosts": hosts})


def load_engine(model_spec: str, hypernet_path: str | None, cache_size: int):
  """The engine for `zett serve`: `tiny-random` builds the demo, anything else loads from disk."""
  from zett.service import demo
  from zett.service.engine import Engine

  if model_spec.split(":")[0] == demo.TINY_MODEL:
    hidden_size, hypernet_layers = demo.parse_tiny_spec(model_spec)
    model = demo.tiny_model(hidden_size=hidden_size)
    if hypernet_path is None:
      return Engine(model, demo.tiny_hypernet(model, num_layers=hypernet_layers), cache_size=cache_size)
  else:
    from zett.models.load import load_model

    model = load_model(model_spec)
  if hypernet_path is None:
    raise UsageError(f"--hypernet is required for --model {model_spec}")
  return Engine(model, hypernet_path, cache_size=cache_size)


def run(args: argparse.Namespace) -> int:
  import uvicorn

  from zett.service.app import create_app
  from zett.service.server import uvicorn_config

  settings = load_settings(args)
  options: ServeOptions = load_options(ServeOptions, args)
  engine = load_engine(options.model, options.hypernet, settings.cache_size)
  engine.warm_up(settings.max_batch_tokens)
  large = None
  if options.vocabulary:
    from zett.service.generation import LargeVocabularyDecoder

    large = LargeVocabularyDecoder(engine.model, options.vocabulary)
  app = create_app(settings, engine, large_vocabulary=large)
  auth = "API key required" if settings.api_key else "no API key"
  print(
    f"zett serve: {engine.model.name} on http://{options.host}:{options.port} ({auth}; Host names answered: "
    f"{', '.join(settings.allowed_hosts)}; OpenAPI at /docs)",
    flush=True,
  )
  uvicorn.Server(uvicorn_config(app, options.host, options.port, log_level="info")).run()
  return 0
