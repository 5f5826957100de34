"""Running the app under uvicorn: in the foreground (`zett serve`) or in a background thread (tests, benchmarks)."""

from __future__ import annotations

import dataclasses
import socket
import threading
import time

import uvicorn

LOOPBACK = "127.0.0.1"


@dataclasses.dataclass
class RunningServer:
  """A uvicorn server in a daemon thread; `url` is its base address, `stop()` shuts it down."""

  url: str
  server: uvicorn.Server
  thread: threading.Thread

  def stop(self, timeout_s: float = 10.0) -> None:
    self.server.should_exit = True
    self.thread.join(timeout_s)


def uvicorn_config(
  app, host: str = LOOPBACK, port: int = 8000, timeout_keep_alive_s: int = 5, log_level: str = "warning"
) -> uvicorn.Config:
  return uvicorn.Config(
    app,
    host=host,
    port=port,
    log_level=log_level,
    access_log=False,
    timeout_keep_alive=timeout_keep_alive_s,
    lifespan="on",
  )


def serve_in_thread(app, host: str = LOOPBACK, startup_timeout_s: float = 60.0) -> RunningServer:
  """Starts `app` on a free port of `host` in a background thread and waits until it accepts requests.

  The socket is bound here (port 0: the OS picks a free one) and handed to uvicorn, so no other
  process can take the port between choosing and binding it.
  """
  sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
  sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
  sock.bind((host, 0))
  port = sock.getsockname()[1]
  server = uvicorn.Server(uvicorn_config(app, host, port))
  # Signals stay with the main thread's owner: uvicorn handles them only when it runs on the main thread.
  thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="zett-uvicorn")
  thread.start()
  deadline = time.monotonic() + startup_timeout_s
  while not server.started:
    if not thread.is_alive() or time.monotonic() > deadline:
      server.should_exit = True
      raise RuntimeError(f"the server on {host}:{port} did not start within {startup_timeout_s:g} s")
    time.sleep(0.02)
  return RunningServer(f"http://{host}:{port}", server, thread)
