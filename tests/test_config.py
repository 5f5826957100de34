"""The config system: YAML + dotted overrides into frozen dataclasses, strict about keys and types."""

import dataclasses

import pytest

from zett import config as zconfig


@dataclasses.dataclass(frozen=True)
class _Optimizer:
  learning_rate: float = 1e-3
  betas: tuple[float, float] = (0.9, 0.95)


@dataclasses.dataclass(frozen=True)
class _Run:
  name: str = "run"
  steps: int = 10
  use_bf16: bool = False
  optimizer: _Optimizer = _Optimizer()
  weights: dict[str, float] = dataclasses.field(default_factory=dict)
  seed: int | None = None

  def __post_init__(self):
    if self.steps < 0:
      raise ValueError("steps must be >= 0")


def test_yaml_and_overrides(tmp_path):
  path = tmp_path / "c.yaml"
  path.write_text("name: tiny\noptimizer:\n  learning_rate: 3e-4\nweights: {en: 0.7, de: 0.3}\n")
  cfg = zconfig.load(_Run, path, ["steps=20", "optimizer.betas=[0.8, 0.99]", "use_bf16=true"])
  assert cfg == _Run(name="tiny", steps=20, use_bf16=True, optimizer=_Optimizer(3e-4, (0.8, 0.99)),
                     weights={"en": 0.7, "de": 0.3})
  saved = tmp_path / "resolved.yaml"
  zconfig.save(cfg, saved)
  assert zconfig.load(_Run, saved) == cfg


@pytest.mark.parametrize("overrides,match", [
    (["stepz=3"], "unknown key.*stepz"),
    (["optimizer.lr=3"], "unknown key.*lr"),
    (["steps=abc"], "expected an integer"),
    (["use_bf16=maybe"], "true/false"),
    (["steps=3", "steps=4"], "given twice"),
    (["steps"], "key.path=value"),
    (["steps=-1"], "steps must be >= 0"),
    (["optimizer.learning_rate=nan"], "learning_rate: expected a finite number"),
    (["optimizer.learning_rate=.inf"], "learning_rate: expected a finite number"),
    (["optimizer.betas=[0.9, -.inf]"], r"betas\[1\]: expected a finite number"),
    (["steps=inf"], "expected an integer"),
])
def test_bad_overrides(overrides, match):
  with pytest.raises(zconfig.ConfigError, match=match):
    zconfig.load(_Run, None, overrides)


def test_missing_and_malformed_files(tmp_path):
  with pytest.raises(zconfig.ConfigError, match="does not exist"):
    zconfig.load(_Run, tmp_path / "nope.yaml")
  bad = tmp_path / "bad.yaml"
  bad.write_text("name: [unclosed\n")
  with pytest.raises(zconfig.ConfigError, match="not valid YAML"):
    zconfig.load(_Run, bad)
