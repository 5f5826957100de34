"""The device mesh: its layout (topology-aware on TPU, every device once), and the same training on 1 device and on a
4x2 mesh of 8 simulated CPU devices with every large parameter sharded."""

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest

from tests._train_helpers import REPO, run_python, subprocess_env
from zett.train.config import MeshConfig
from zett.train.mesh import MeshError, device_grid, make_mesh


@dataclasses.dataclass(frozen=True)
class _FakeChip:
  """What `jax.experimental.mesh_utils` reads of a TPU v4 device (one device per chip)."""
  id: int
  coords: tuple[int, int, int]
  slice_index: int = 0
  platform: str = "tpu"
  device_kind: str = "TPU v4"
  core_on_chip: int = 0
  process_index: int = 0


def _cube(shape, slice_index=0, first_id=0):
  coords = [(x, y, z) for z in range(shape[2]) for y in range(shape[1]) for x in range(shape[0])]
  return [_FakeChip(first_id + i, c, slice_index) for i, c in enumerate(coords)]


def _neighbours(a: _FakeChip, b: _FakeChip) -> bool:
  return a.slice_index == b.slice_index and sum(abs(i - j) for i, j in zip(a.coords, b.coords)) == 1


def test_8_simulated_cpu_devices_each_appear_once():
  script = """
import json, jax
from zett.train.config import MeshConfig
from zett.train.mesh import make_mesh
out = {}
for data, model in ((4, 2), (8, 1), (1, 8), (-1, 4)):
  mesh = make_mesh(MeshConfig(data=data, model=model))
  out[f"{data}x{model}"] = [dict(mesh.shape), sorted(d.id for d in mesh.devices.flat), len(jax.devices())]
print(json.dumps(out))
"""
  done = run_python(script, subprocess_env(XLA_FLAGS="--xla_force_host_platform_device_count=8"), timeout=120)
  assert done.returncode == 0, done.stderr[-3000:]
  results = json.loads(done.stdout.strip().splitlines()[-1])
  expected = {"4x2": {"data": 4, "model": 2}, "8x1": {"data": 8, "model": 1}, "1x8": {"data": 1, "model": 8},
              "-1x4": {"data": 2, "model": 4}}
  for name, (shape, ids, count) in results.items():
    assert count == 8 and shape == expected[name], (name, shape)
    assert ids == list(range(8)), (name, ids)


def test_mesh_that_does_not_fit_the_devices():
  import jax
  with pytest.raises(MeshError, match="does not fit 1 devices"):
    make_mesh(MeshConfig(data=2, model=1), jax.devices()[:1])


def test_tpu_slice_puts_the_model_axis_on_neighbouring_chips():
  chips = _cube((2, 2, 2))
  shuffled = [chips[i] for i in (0, 7, 1, 6, 2, 5, 3, 4)]  # a plain reshape would pair distant chips
  grid = device_grid(4, 2, shuffled)
  assert grid.shape == (4, 2) and sorted(d.id for d in grid.flat) == list(range(8))
  assert all(_neighbours(a, b) for a, b in grid)
  assert not all(_neighbours(a, b) for a, b in np.asarray(shuffled, dtype=object).reshape(4, 2))


def test_tpu_multislice_keeps_the_model_axis_inside_a_slice():
  chips = _cube((2, 2, 1), slice_index=0) + _cube((2, 2, 1), slice_index=1, first_id=4)
  grid = device_grid(4, 2, chips[::-1])
  assert grid.shape == (4, 2) and sorted(d.id for d in grid.flat) == list(range(8))
  # "data" rows 0-1 on slice 0 and 2-3 on slice 1; every model pair is two neighbouring chips of one slice.
  assert [{d.slice_index for d in row} for row in grid] == [{0}, {0}, {1}, {1}]
  assert all(_neighbours(a, b) for a, b in grid)


def test_device_sets_without_a_topology_keep_their_order():
  # Four chips that are not a cuboid (a "hole"): mesh_utils rejects them, the given order is used.
  chips = [_FakeChip(0, (0, 0, 0)), _FakeChip(1, (1, 0, 0)), _FakeChip(2, (0, 1, 0)), _FakeChip(3, (1, 1, 1))]
  grid = device_grid(2, 2, chips)
  assert [[d.id for d in row] for row in grid] == [[0, 1], [2, 3]]
  # Three slices do not divide a "data" axis of 2: one flat layout in the given order rather than an error.
  odd = [_FakeChip(i, (0, 0, 0), slice_index=i) for i in range(2)] + [_FakeChip(2, (0, 0, 0), 2),
                                                                       _FakeChip(3, (1, 0, 0), 2)]
  assert [d.id for d in device_grid(2, 2, odd).flat] == [0, 1, 2, 3]


@pytest.fixture(scope="module")
def mesh_results(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("train-mesh")
  # XLA_FLAGS must be set before jax starts, hence a fresh interpreter.
  done = subprocess.run([sys.executable, str(REPO / "tests" / "_train_mesh_script.py"), str(tmp)],
                        env=subprocess_env(XLA_FLAGS="--xla_force_host_platform_device_count=8"), cwd=REPO,
                        capture_output=True, text=True, timeout=900)
  assert done.returncode == 0, done.stderr[-4000:]
  return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_4x2_mesh_gives_the_single_device_loss(mesh_results):
  assert mesh_results["mesh"] == {"data": 4, "model": 2}
  assert len(mesh_results["single"]) == 4
  for one, eight in zip(mesh_results["single"], mesh_results["sharded"]):
    assert abs(one - eight) < 1e-5
  assert mesh_results["param_diff"] < 1e-5


@pytest.mark.slow
def test_every_large_parameter_is_sharded_by_a_rule(mesh_results):
  # Offenders are listed (name, shape, size), largest first, so a failure says what to add to train.mesh.RULES.
  assert mesh_results["tiny_offenders"] == []
  assert mesh_results["full_size"]["base"] == []
  assert mesh_results["full_size"]["hypernet"] == []
  assert mesh_results["full_size"]["embed_tokens_spec"] == ["model", "data"]
  assert "frozen base" in mesh_results["report"] and "[model, data]" in mesh_results["report"]
