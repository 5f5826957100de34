"""The service's one error shape: `{"error": {"type", "message", "details"}}` with a 4xx/5xx status."""

from __future__ import annotations

import json

from fastapi.responses import JSONResponse

from zett.errors import ZettError


class ServiceError(ZettError):
  """An error answered as JSON with `status` (raised by route code, turned into a response by the app)."""

  def __init__(self, status: int, kind: str, message: str, details=None):
    super().__init__(message)
    self.status, self.kind, self.message, self.details = status, kind, message, details


def error_body(kind: str, message: str, details=None) -> dict:
  return {"error": {"type": kind, "message": message, "details": details}}


def error_response(status: int, kind: str, message: str, details=None, headers=None) -> JSONResponse:
  return JSONResponse(error_body(kind, message, details), status_code=status, headers=headers)


async def send_error(send, status: int, kind: str, message: str, headers=()) -> None:
  """Answers with an error straight on the ASGI channel (before any route ran)."""
  body = json.dumps(error_body(kind, message)).encode()
  await send(
    {
      "type": "http.response.start",
      "status": status,
      "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers],
    }
  )
  await send({"type": "http.response.body", "body": body})


def utf8(texts: list[str], field: str) -> list[bytes]:
  """UTF-8 bytes of each text; a lone surrogate (legal as a JSON escape, not as text) is a 422."""
  out = []
  for i, text in enumerate(texts):
    try:
      out.append(text.encode("utf-8"))
    except UnicodeEncodeError:
      raise ServiceError(
        422, "invalid_text", f"{field}[{i}] is not valid Unicode (it holds a lone surrogate such as \\ud800)"
      ) from None
  return out
