"""`zett serve`: the HTTP service (embeddings, transfer jobs, dynamic tokenization, streamed generation).

Library use: `create_app(ServiceSettings(...), Engine(model, hypernetwork))` gives
a FastAPI (ASGI) app; `serve_in_thread(app)` runs it on a free loopback port. The command itself: `zett.cli.serve`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from zett.service.settings import ServiceSettings

if TYPE_CHECKING:  # for type checkers; at run time __getattr__ imports them on first use
  from zett.service.app import create_app
  from zett.service.engine import EmbeddingBatcher, Engine
  from zett.service.server import serve_in_thread

__all__ = ["ServiceSettings", "create_app", "Engine", "EmbeddingBatcher", "serve_in_thread"]


def __getattr__(name):  # heavy imports (jax, fastapi) only when used, so `zett --help` stays fast
  if name == "create_app":
    from zett.service.app import create_app

    return create_app
  if name in ("Engine", "EmbeddingBatcher"):
    from zett.service import engine

    return getattr(engine, name)
  if name == "serve_in_thread":
    from zett.service.server import serve_in_thread

    return serve_in_thread
  raise AttributeError(name)
