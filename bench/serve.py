"""Throughput and latency of POST /v1/embeddings on loopback, with and without request batching.

Starts `zett serve` twice in subprocesses (same model, cache off so every token costs a hypernetwork
call; one server merges concurrent requests, the other makes one hypernetwork call per request),
drives each with 1, 8 and 32 concurrent clients for a fixed time, and prints requests/s and
p50/p99 latency per cell, then the batched / unbatched throughput ratio.

  python bench/serve.py [--quick] [--model tiny-random] [--tokens-per-request 16]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import random
import signal
import socket
import string
import subprocess
import sys
import time

import httpx
import numpy as np

CONCURRENCY = (1, 8, 32)


def _free_port() -> int:
  with socket.socket() as sock:
    sock.bind(("127.0.0.1", 0))
    return sock.getsockname()[1]


def _start_server(model: str, hypernet: str | None, batching: bool, port: int,
                  max_batch_tokens: int) -> subprocess.Popen:
  command = [sys.executable, "-m", "zett", "serve", "--model", model, "--port", str(port),
             "--set", "cache_size=0", "--set", f"max_batch_tokens={max_batch_tokens}"]
  if hypernet:
    command += ["--hypernet", hypernet]
  if not batching:
    command.append("--no-batching")
  env = {name: value for name, value in os.environ.items() if name != "ZETT_API_KEY"}  # no key: open server
  return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _wait_ready(url: str, process: subprocess.Popen, timeout_s: float = 300) -> None:
  deadline = time.monotonic() + timeout_s
  while time.monotonic() < deadline:
    if process.poll() is not None:
      raise RuntimeError(f"server exited: {process.stderr.read()[-2000:]}")
    try:
      if httpx.get(url + "/healthz", timeout=2).status_code == 200:
        return
    except httpx.HTTPError:
      pass
    time.sleep(0.25)
  raise RuntimeError("server did not start")


def _cpu_seconds(pid: int) -> float:
  """User + system CPU time of a process, all threads (Linux /proc): robust to other load on the machine."""
  fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
  return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _random_tokens(rng: random.Random, count: int) -> list[str]:
  # Fresh strings (no cache hits even if the cache were on), 3-10 letters, half with a leading space.
  return [(" " if rng.random() < 0.5 else "") + "".join(rng.choices(string.ascii_lowercase, k=rng.randint(3, 10)))
          for _ in range(count)]


async def _drive(url: str, clients: int, duration_s: float, tokens_per_request: int, seed: int):
  latencies: list[float] = []
  errors = 0
  limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
  async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
    async def worker(index: int, stop_at: float, record: bool):
      nonlocal errors
      rng = random.Random(seed * 1000 + index)
      while time.monotonic() < stop_at:
        body = {"tokens": _random_tokens(rng, tokens_per_request), "encoding": "base64"}
        started = time.perf_counter()
        response = await client.post("/v1/embeddings", json=body)
        if response.status_code != 200:
          errors += 1
        elif record:
          latencies.append(time.perf_counter() - started)
    await asyncio.gather(*(worker(i, time.monotonic() + 0.5, False) for i in range(clients)))  # warm connections
    started = time.monotonic()
    await asyncio.gather(*(worker(i, started + duration_s, True) for i in range(clients)))
    elapsed = time.monotonic() - started
  return len(latencies) / elapsed, latencies, errors


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="1 round of 2 s per cell instead of 3 rounds of 3 s")
  parser.add_argument("--model", default="tiny-random", help="base model spec for `zett serve` (default: tiny-random)")
  parser.add_argument("--hypernet", help="hypernetwork folder (needed for any model but tiny-random)")
  parser.add_argument("--tokens-per-request", type=int, default=16)
  parser.add_argument("--max-batch-tokens", type=int, default=1024, help="the batched server's merge limit")
  args = parser.parse_args(argv)
  rounds, duration_s = (1, 2.0) if args.quick else (3, 3.0)

  # Both servers run at once and the cells alternate between them, round after round, so drifting load
  # from other processes on the machine hits both sides alike; each cell reports its median round.
  servers = {}
  try:
    for batching in (True, False):
      port = _free_port()
      servers[batching] = (f"http://127.0.0.1:{port}", _start_server(args.model, args.hypernet, batching, port, args.max_batch_tokens))
    for url, process in servers.values():
      _wait_ready(url, process)
    samples = {key: [] for key in itertools.product((True, False), CONCURRENCY)}
    for round_index in range(rounds):
      for clients in CONCURRENCY:
        for batching in ((True, False) if round_index % 2 == 0 else (False, True)):
          url, process = servers[batching]
          cpu_before = _cpu_seconds(process.pid)
          rps, latencies, errors = asyncio.run(
              _drive(url, clients, duration_s, args.tokens_per_request, round_index * 100 + clients))
          # Includes the 0.5 s connection warm-up's requests, which are few and cost the same.
          cpu_ms = (_cpu_seconds(process.pid) - cpu_before) * 1000 / max(len(latencies), 1)
          samples[batching, clients].append((rps, latencies, errors, cpu_ms))
          print(f"  round {round_index + 1} batching={'on ' if batching else 'off'} clients={clients:>2}: "
                f"{rps:8.1f} req/s  server CPU {cpu_ms:6.2f} ms/req  errors {errors}", file=sys.stderr, flush=True)
  finally:
    for _, process in servers.values():
      process.send_signal(signal.SIGINT)
    for _, process in servers.values():
      try:
        process.wait(20)
      except subprocess.TimeoutExpired:
        process.kill()

  rows = {}
  for key, runs in samples.items():
    rps_values = sorted(r[0] for r in runs)
    latencies = np.concatenate([np.asarray(r[1]) for r in runs]) * 1000
    p50, p99 = np.percentile(latencies, [50, 99]) if latencies.size else (float("nan"),) * 2
    cpu_values = sorted(r[3] for r in runs)
    rows[key] = (rps_values[len(rps_values) // 2], p50, p99, sum(r[2] for r in runs), cpu_values[len(cpu_values) // 2])

  print(f"\nPOST /v1/embeddings, {args.model}, {args.tokens_per_request} uncached tokens per request, "
        f"max_batch_tokens {args.max_batch_tokens}, {rounds} x {duration_s:g} s per cell, loopback")
  print(f"{'clients':>7} | {'batched req/s':>13} {'p50 ms':>7} {'p99 ms':>7} {'CPU ms':>7} | "
        f"{'unbatched req/s':>15} {'p50 ms':>7} {'p99 ms':>7} {'CPU ms':>7} | {'req/s ratio':>11} {'CPU ratio':>9}")
  for clients in CONCURRENCY:
    on, off = rows[True, clients], rows[False, clients]
    print(f"{clients:>7} | {on[0]:13.1f} {on[1]:7.1f} {on[2]:7.1f} {on[4]:7.2f} | {off[0]:15.1f} {off[1]:7.1f} "
          f"{off[2]:7.1f} {off[4]:7.2f} | {on[0] / max(off[0], 1e-9):10.2f}x {off[4] / max(on[4], 1e-9):8.2f}x")
  errors = sum(r[3] for r in rows.values())
  print("req/s ratio = batched / unbatched requests per second (median round); CPU ratio = unbatched / batched "
        f"server CPU time per request (robust to other load on the machine); errors: {errors}")
  return 0 if errors == 0 else 1


if __name__ == "__main__":
  sys.exit(main())
