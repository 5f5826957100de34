"""The same training on 1 device and on a 4x2 mesh of 8 simulated CPU devices; every large parameter is sharded."""

import json
import subprocess
import sys

import pytest

from tests._train_helpers import REPO, subprocess_env

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def mesh_results(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("train-mesh")
  # XLA_FLAGS must be set before jax starts, hence a fresh interpreter.
  done = subprocess.run([sys.executable, str(REPO / "tests" / "_train_mesh_script.py"), str(tmp)],
                        env=subprocess_env(XLA_FLAGS="--xla_force_host_platform_device_count=8"), cwd=REPO,
                        capture_output=True, text=True, timeout=900)
  assert done.returncode == 0, done.stderr[-4000:]
  return json.loads(done.stdout.strip().splitlines()[-1])


def test_4x2_mesh_gives_the_single_device_loss(mesh_results):
  assert mesh_results["mesh"] == {"data": 4, "model": 2}
  assert len(mesh_results["single"]) == 4
  for one, eight in zip(mesh_results["single"], mesh_results["sharded"]):
    assert abs(one - eight) < 1e-5
  assert mesh_results["param_diff"] < 1e-5


def test_every_large_parameter_is_sharded_by_a_rule(mesh_results):
  # Offenders are listed (name, shape, size), largest first, so a failure says what to add to train.mesh.RULES.
  assert mesh_results["tiny_offenders"] == []
  assert mesh_results["full_size"]["base"] == []
  assert mesh_results["full_size"]["hypernet"] == []
  assert mesh_results["full_size"]["embed_tokens_spec"] == ["model", "data"]
  assert "frozen base" in mesh_results["report"] and "[model, data]" in mesh_results["report"]
