"""The layers in pyproject's [tool.zett.layers] hold: every module has a layer, imports point down (or within a
layer), and module-level imports form no cycle. Every import counts, including the lazy ones inside functions."""

import ast
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FOLDERS = {"zett": "zett", "hypernet": "zett.hypernet", "train": "zett.train"}


def _modules() -> dict[str, Path]:
  modules = {}
  for folder, package in FOLDERS.items():
    for path in (REPO / folder).rglob("*.py"):
      parts = path.relative_to(REPO / folder).with_suffix("").parts
      if parts[-1] == "__init__":
        parts = parts[:-1]
      modules[".".join((package, *parts))] = path
  return modules


def _layers() -> list[tuple[str, list[str]]]:
  table = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["zett"]["layers"]
  return list(table.items())  # top first


def _layer_of(module: str, layers) -> int | None:
  best, best_length = None, -1
  for index, (_, prefixes) in enumerate(layers):
    for prefix in prefixes:
      if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_length:
        best, best_length = index, len(prefix)
  return best


def _imports(module: str, path: Path, modules, top_level_only: bool) -> set[str]:
  """Project modules `module` imports (a `from package import name` counts as package.name when that is a module)."""
  tree = ast.parse(path.read_text())
  nodes = tree.body if top_level_only else list(ast.walk(tree))
  package = module if path.name == "__init__.py" else module.rpartition(".")[0]
  found = set()
  for node in nodes:
    if isinstance(node, ast.Import):
      names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
        base = f"{anchor}.{base}" if base else anchor
      names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
    else:
      continue
    found.update(name for name in names if name in modules)
  return found - {module}


def test_every_module_has_a_layer():
  layers = _layers()
  unplaced = [m for m in _modules() if m != "zett" and _layer_of(m, layers) is None]
  assert not unplaced, f"add these modules to [tool.zett.layers] in pyproject.toml: {sorted(unplaced)}"


def test_imports_point_down_the_layers():
  layers, modules = _layers(), _modules()
  upward = []
  for module, path in modules.items():
    if module == "zett":
      continue
    own = _layer_of(module, layers)
    for target in _imports(module, path, modules, top_level_only=False):
      theirs = _layer_of(target, layers)
      if theirs is not None and own is not None and theirs < own:
        upward.append(f"{module} ({layers[own][0]}) -> {target} ({layers[theirs][0]})")
  assert not upward, "imports against the layers:\n" + "\n".join(sorted(upward))


def test_module_level_imports_have_no_cycle():
  modules = _modules()
  graph = {m: _imports(m, p, modules, top_level_only=True) for m, p in modules.items()}
  # Tarjan's strongly connected components; any component larger than one module is a cycle.
  index, low, stack, on_stack, cycles, counter = {}, {}, [], set(), [], [0]

  def visit(v):
    index[v] = low[v] = counter[0]
    counter[0] += 1
    stack.append(v)
    on_stack.add(v)
    for w in graph[v]:
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      component = []
      while True:
        w = stack.pop()
        on_stack.discard(w)
        component.append(w)
        if w == v:
          break
      if len(component) > 1:
        cycles.append(sorted(component))

  for v in graph:
    if v not in index:
      visit(v)
  assert not cycles, f"module-level import cycles: {cycles}"


def test_the_checker_sees_an_upward_import(tmp_path):
  """The checker itself: a core module importing the CLI is found."""
  fake = tmp_path / "fake.py"
  fake.write_text("def f():\n  from zett.cli import main\n")
  modules = {**_modules(), "zett.config": fake}
  assert _imports("zett.config", fake, modules, top_level_only=False) == {"zett.cli"}
  assert _layer_of("zett.config", _layers()) > _layer_of("zett.cli", _layers())
