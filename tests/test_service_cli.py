"""`zett serve`: argument parsing into settings, and the real command on disk folders in a subprocess."""

import argparse
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

from zett.cli.serve import add_arguments, load_settings


def _parse(*argv):
  parser = argparse.ArgumentParser()
  add_arguments(parser)
  return parser.parse_args(list(argv))


def test_flags_and_overrides_become_settings(monkeypatch):
  monkeypatch.delenv("ZETT_API_KEY", raising=False)
  settings = load_settings(_parse("--model", "m", "--set", "max_tokens_per_request=10", "--set", "cache_size=0",
                                  "--no-batching"))
  assert (settings.max_tokens_per_request, settings.cache_size, settings.batching, settings.api_key) == (10, 0, False,
                                                                                                       None)
  monkeypatch.setenv("ZETT_API_KEY", "from-env")
  assert load_settings(_parse("--model", "m")).api_key == "from-env"
  assert load_settings(_parse("--model", "m", "--api-key", "flag")).api_key == "flag"


@pytest.mark.parametrize("override", ["max_tokens_per_request=0", "no_such_setting=1", "cache_size=lots",
                                      "api_key=with space", "api_key=clé"])
def test_bad_settings_are_clear_value_errors(override):
  with pytest.raises(ValueError, match=override.split("=")[0]):
    load_settings(_parse("--model", "m", "--set", override))


def _free_port():
  with socket.socket() as sock:
    sock.bind(("127.0.0.1", 0))
    return sock.getsockname()[1]


@pytest.mark.slow
def test_zett_serve_from_model_and_hypernet_folders(tmp_path):
  from zett import hypernet
  from zett.interop.hf import save_pretrained
  from zett.models.load import load_model
  from zett.service.demo import tiny_hypernet, tiny_model
  save_pretrained(tiny_model(), tmp_path / "model")
  loaded = load_model(tmp_path / "model")  # its weights sha256 is the file's: the hypernetwork records that
  made = tiny_hypernet(loaded)
  hypernet.save_hypernet(tmp_path / "hypernet", made.config, made.params)

  port = _free_port()
  env = {**os.environ, "ZETT_API_KEY": "cli-key", "JAX_PLATFORMS": "cpu"}
  process = subprocess.Popen(
      [sys.executable, "-m", "zett", "serve", "--model", str(tmp_path / "model"), "--hypernet",
       str(tmp_path / "hypernet"), "--port", str(port), "--set", "max_batch_tokens=16"],
      env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  url = f"http://127.0.0.1:{port}"
  try:
    deadline = time.monotonic() + 120
    while True:
      assert process.poll() is None, process.stdout.read()
      try:
        if httpx.get(url + "/healthz", timeout=2).status_code == 200:
          break
      except httpx.HTTPError:
        pass
      assert time.monotonic() < deadline, "zett serve did not start"
      time.sleep(0.3)
    assert httpx.post(url + "/v1/embeddings", json={"tokens": ["a"]}).status_code == 401
    response = httpx.post(url + "/v1/embeddings", json={"tokens": [" hello"]},
                          headers={"Authorization": "Bearer cli-key"}, timeout=60)
    assert response.status_code == 200 and len(response.json()["data"][0]["input"]) == 64
  finally:
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=30)
  # Ctrl-C: uvicorn shuts down gracefully, then the zett CLI reports the interrupt (exit 130).
  assert process.returncode in (0, 130) and "Application shutdown complete" in output, output
  assert f"on http://127.0.0.1:{port}" in output and "API key required" in output


@pytest.mark.parametrize("key", ["", "   ", "\t"])
def test_an_empty_or_blank_api_key_is_an_error_not_an_open_server(monkeypatch, key):
  monkeypatch.delenv("ZETT_API_KEY", raising=False)
  with pytest.raises(ValueError, match="--api-key is empty or blank"):
    load_settings(_parse("--model", "m", "--api-key", key))
  monkeypatch.setenv("ZETT_API_KEY", key)
  with pytest.raises(ValueError, match="ZETT_API_KEY is empty or blank"):
    load_settings(_parse("--model", "m"))


def test_zett_serve_with_an_unset_shell_variable_as_key_exits_2_before_loading(tmp_path):
  env = {k: v for k, v in os.environ.items() if k != "ZETT_API_KEY"}
  process = subprocess.run([sys.executable, "-m", "zett", "serve", "--model", "tiny-random", "--api-key", ""],
                           env=env, capture_output=True, text=True, timeout=120)
  assert process.returncode == 2 and "Traceback" not in process.stderr
  assert process.stderr.strip().splitlines() == ["zett serve: error: --api-key is empty or blank (an unset shell "
                                                 "variable?); give a key, or leave --api-key out to serve without one"]


def test_the_bind_address_joins_the_allowed_host_names(monkeypatch):
  monkeypatch.delenv("ZETT_API_KEY", raising=False)
  assert load_settings(_parse("--model", "m")).allowed_hosts == ("localhost", "127.0.0.1", "::1")
  assert load_settings(_parse("--model", "m", "--host", "10.1.2.3")).allowed_hosts[-1] == "10.1.2.3"
  assert "0.0.0.0" not in load_settings(_parse("--model", "m", "--host", "0.0.0.0")).allowed_hosts
  assert load_settings(_parse("--model", "m", "--set", "allowed_hosts=[zett.internal]")).allowed_hosts == (
      "zett.internal", "127.0.0.1")
  with pytest.raises(ValueError, match="allowed_hosts"):
    load_settings(_parse("--model", "m", "--set", "allowed_hosts=[]"))
