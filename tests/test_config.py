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


@dataclasses.dataclass(frozen=True)
class _Documented:
  """A class docstring is not a field's."""

  width: int = zconfig.bounded(8, 1, 64)
  """Columns per row,
  wrapped over two lines."""
  share: float = zconfig.bounded(0.5, 0.0, 1.0, low_open=True, high_open=True)
  """A share strictly between 0 and 1."""
  label: str = ""

  def __post_init__(self):
    zconfig.check_ranges(self)


@dataclasses.dataclass(frozen=True)
class _MoreDocumented(_Documented):
  label: str = "x"
  """Documented only in the subclass."""
  extra: bool = False
  """A field of the subclass."""


def test_field_docs_reads_attribute_docstrings():
  assert zconfig.field_docs(_Documented) == {"width": "Columns per row, wrapped over two lines.",
                                             "share": "A share strictly between 0 and 1."}
  assert zconfig.field_docs(_MoreDocumented) == {"width": "Columns per row, wrapped over two lines.",
                                                 "share": "A share strictly between 0 and 1.",
                                                 "label": "Documented only in the subclass.",
                                                 "extra": "A field of the subclass."}
  assert zconfig.field_docs(_Run) == {}  # no docstrings, no entries


@pytest.mark.parametrize("overrides,match", [
    (["width=0"], r"width must be in \[1, 64\], got 0"),
    (["width=65"], r"width must be in \[1, 64\]"),
    (["share=1"], r"share must be in \(0.0, 1.0\), got 1.0"),
    (["share=0"], r"share must be in \(0.0, 1.0\)"),
    (["share=nan"], "expected a finite number"),
    (["label=[unclosed"], "label: '\\[unclosed' is not a YAML value"),
])
def test_bounded_fields_are_range_checked(overrides, match):
  with pytest.raises(zconfig.ConfigError, match=match):
    zconfig.load(_Documented, None, overrides)
  assert zconfig.load(_Documented, None, ["width=64", "share=0.999"]).width == 64


def test_values_join_the_overrides_and_must_agree_with_them():
  assert zconfig.load(_Run, None, ["steps=3"], {"name": "yes", "optimizer.learning_rate": 0.5}) == _Run(
      name="yes", steps=3, optimizer=_Optimizer(learning_rate=0.5))  # a value is never YAML-parsed: "yes" stays
  assert zconfig.load(_Run, None, ["steps=3"], {"steps": 3}).steps == 3
  with pytest.raises(zconfig.ConfigError, match="steps given twice"):
    zconfig.load(_Run, None, ["steps=3"], {"steps": 4})


def test_sampler_pretokenizers_from_overrides_and_checked():
  from zett.train.config import SamplerConfig

  assert zconfig.load(SamplerConfig, None, ["pretokenizers=[gpt2, cl100k]"]).pretokenizers == ("gpt2", "cl100k")
  assert SamplerConfig().pretokenizers == ("gpt2",)  # the default samples what it always did
  for bad in ("[gpt3]", "[]"):
    with pytest.raises(zconfig.ConfigError, match="sampler.pretokenizers"):
      zconfig.load(SamplerConfig, None, [f"pretokenizers={bad}"])
