"""The ASGI layer in front of every route: metrics, Host check, API-key check, body size limit, UTF-8 check.

It is plain ASGI (not a Starlette BaseHTTPMiddleware) so streamed responses pass through untouched
and the body is read once, bounded, before FastAPI parses anything.
"""

from __future__ import annotations

import hmac
import time

from zett.service.errors import send_error
from zett.service.metrics import ServiceMetrics

# Reachable without the API key: liveness probes and the schema (clients need it to learn the API).
PUBLIC_PATHS = frozenset({"/healthz", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"})
# Not an HTTP status the server sends: the metrics label of a request whose client hung up before its body
# arrived (nginx's convention), so hang-ups are not counted as server errors.
CLIENT_CLOSED = 499


def host_name(header: bytes) -> str:
  """The host of a Host header, without port or IPv6 brackets, lower-case ("[::1]:8000" -> "::1")."""
  text = header.decode("latin-1").strip().lower()
  if text.startswith("["):
    return text[1:].partition("]")[0]
  return text.rpartition(":")[0] if text.count(":") == 1 else text


class Gate:
  """Wraps the FastAPI app; see the module docstring."""

  def __init__(
    self,
    app,
    api_key: str | None,
    max_body_bytes: int,
    metrics: ServiceMetrics,
    allowed_hosts: tuple[str, ...] = ("*",),
  ):
    self.app = app
    self._any_host = "*" in allowed_hosts
    self._hosts = frozenset(h.strip().lower().strip("[]") for h in allowed_hosts)
    self._key = api_key.encode() if api_key else None
    self.max_body_bytes = max_body_bytes
    self.metrics = metrics

  async def __call__(self, scope, receive, send):
    if scope["type"] != "http":
      return await self.app(scope, receive, send)
    started = time.perf_counter()
    status = [500]

    async def send_and_record(message):
      if message["type"] == "http.response.start":
        status[0] = message["status"]
      await send(message)

    try:
      if await self._handle(scope, receive, send_and_record) == CLIENT_CLOSED:
        status[0] = CLIENT_CLOSED
    finally:
      route = scope.get("route")
      path = getattr(route, "path", None) or "unmatched"  # templates, never raw paths: bounded label values
      method = scope.get("method", "")
      self.metrics.requests.labels(method, path, str(status[0])).inc()
      self.metrics.latency.labels(method, path).observe(time.perf_counter() - started)

  async def _handle(self, scope, receive, send):
    headers = {k.decode("latin-1").lower(): v for k, v in scope.get("headers", [])}
    host = headers.get("host")
    if not self._any_host and host is not None and host_name(host) not in self._hosts:
      return await send_error(
        send,
        400,
        "invalid_host",
        f"Host {host.decode('latin-1')!r} is not served here; add its name to the allowed_hosts service setting",
      )
    if self._key is not None and scope["path"] not in PUBLIC_PATHS:
      given = headers.get("authorization", b"")
      if not given:
        return await send_error(
          send,
          401,
          "unauthorized",
          "missing API key: send the header 'Authorization: Bearer <key>'",
          [(b"www-authenticate", b"Bearer")],
        )
      scheme, _, token = given.partition(b" ")
      # compare_digest takes time independent of where the strings differ: no timing oracle on the key.
      if scheme.lower() != b"bearer" or not hmac.compare_digest(token.strip(), self._key):
        return await send_error(send, 401, "unauthorized", "invalid API key", [(b"www-authenticate", b"Bearer")])

    declared = headers.get("content-length")
    if declared is not None:
      try:
        declared_bytes = int(declared)
      except ValueError:
        return await send_error(send, 400, "bad_request", "Content-Length is not a number")
      if declared_bytes > self.max_body_bytes:
        return await send_error(
          send,
          413,
          "body_too_large",
          f"request body of {declared_bytes} bytes exceeds the limit of {self.max_body_bytes} bytes",
        )
    chunks, size = [], 0
    more = True
    while more:
      message = await receive()
      if message["type"] == "http.disconnect":
        return CLIENT_CLOSED
      chunk = message.get("body", b"")
      size += len(chunk)
      if size > self.max_body_bytes:
        return await send_error(
          send, 413, "body_too_large", f"request body exceeds the limit of {self.max_body_bytes} bytes"
        )
      chunks.append(chunk)
      more = message.get("more_body", False)
    body = b"".join(chunks)

    content_type = headers.get("content-type", b"").split(b";")[0].strip().lower()
    if body and scope.get("method") in ("POST", "PUT", "PATCH"):
      if content_type != b"application/json":
        return await send_error(
          send,
          415,
          "unsupported_media_type",
          f"send the body as JSON with 'Content-Type: application/json' "
          f"(got {content_type.decode('latin-1') or 'no content type'!r})",
        )
      try:
        body.decode("utf-8")
      except UnicodeDecodeError as error:
        return await send_error(
          send,
          400,
          "invalid_encoding",
          f"request body is not valid UTF-8 "
          f"(byte 0x{body[error.start]:02x} at offset {error.start}); JSON must be UTF-8",
        )

    delivered = False

    async def replay():
      nonlocal delivered
      if not delivered:
        delivered = True
        return {"type": "http.request", "body": body, "more_body": False}
      return await receive()  # later calls wait for the disconnect (streaming responses watch for it)

    await self.app(scope, replay, send)
