"""`zett serve`: its flags, settings and engine loading, then the HTTP server."""

from __future__ import annotations

import argparse
import os

from zett.cli import int_range
from zett.errors import UsageError
from zett.service.settings import ServiceSettings


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument(
    "--model",
    required=True,
    help="base model: HF folder, .gguf file, smollm2-135m, a hub name, or tiny-random[:HIDDEN[:LAYERS]] "
    "(a random demo model with a random hypernetwork of LAYERS layers; default 64 and 1)",
  )
  parser.add_argument("--hypernet", help="hypernetwork folder (from `zett train`); optional only for tiny-random")
  parser.add_argument(
    "--vocabulary", help="large-vocabulary folder from `zett.ann.build` (enables vocabulary='large' in /v1/generate)"
  )
  parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
  parser.add_argument("--port", type=int_range(1, 65535), default=8000)
  parser.add_argument("--api-key", help="require 'Authorization: Bearer KEY' (default: $ZETT_API_KEY, else none)")
  parser.add_argument("--config", help="YAML file of service settings (zett.service.ServiceSettings fields)")
  parser.add_argument(
    "--set",
    action="append",
    default=[],
    metavar="KEY=VALUE",
    help="override a service setting, e.g. --set max_tokens_per_request=8192 (repeatable)",
  )
  parser.add_argument("--no-batching", action="store_true", help="one hypernetwork call per request")
  parser.add_argument("--debug", action="store_true", help="show tracebacks")


def load_settings(args: argparse.Namespace) -> ServiceSettings:
  import dataclasses

  from zett import config as config_lib

  settings = config_lib.load(ServiceSettings, args.config, args.set)
  # A key given but empty (`--api-key "$UNSET"`) is a mistake, never "no key": it would start an open server.
  for source, given in (("--api-key", args.api_key), ("ZETT_API_KEY", os.environ.get("ZETT_API_KEY"))):
    if given is not None:
      if not given.strip():
        raise UsageError(
          f"{source} is empty or blank (an unset shell variable?); give a key, or leave "
          f"{source} out to serve without one"
        )
      api_key = given
      break
  else:
    api_key = settings.api_key
  hosts = settings.allowed_hosts
  if args.host not in ("0.0.0.0", "::", "") and args.host.lower() not in hosts:  # the address it listens on
    hosts = (*hosts, args.host.lower())
  return dataclasses.replace(
    settings, api_key=api_key, batching=settings.batching and not args.no_batching, allowed_hosts=hosts
  )


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
  engine = load_engine(args.model, args.hypernet, settings.cache_size)
  engine.warm_up(settings.max_batch_tokens)
  large = None
  if args.vocabulary:
    from zett.service.generation import LargeVocabularyDecoder

    large = LargeVocabularyDecoder(engine.model, args.vocabulary)
  app = create_app(settings, engine, large_vocabulary=large)
  auth = "API key required" if settings.api_key else "no API key"
  print(
    f"zett serve: {engine.model.name} on http://{args.host}:{args.port} ({auth}; Host names answered: "
    f"{', '.join(settings.allowed_hosts)}; OpenAPI at /docs)",
    flush=True,
  )
  uvicorn.Server(uvicorn_config(app, args.host, args.port, log_level="info")).run()
  return 0
