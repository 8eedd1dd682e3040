"""The house as ARCHITECTURE.md draws it: layers that import only downwards, no circle, small rooms."""

import ast
import pathlib

import pytest

from skipvqvc_jax import WINGS

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / 'skipvqvc_jax'


WING_ORDER = {wing: i for i, wing in enumerate(WINGS)}
# Conversion and evaluation restore models through `store`, never through the training loop: of the
# training wing they reach only the trainers' table (the normalisation a model was trained with).
INFERENCE_MAY_READ = {'skipvqvc_jax.training.trainers'}


def _module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(PACKAGE.parent).with_suffix('').parts
  return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def _imports() -> dict[str, set[str]]:
  """{module: the package modules it imports anywhere in its body}, from the source."""
  graph = {}
  for path in PACKAGE.rglob('*.py'):
    name = _module_name(path)
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.Import):
        found |= {a.name for a in node.names if a.name.startswith('skipvqvc_jax')}
      elif (
        isinstance(node, ast.ImportFrom) and node.module and node.module.startswith('skipvqvc_jax')
      ):
        # `from skipvqvc_jax import corpus` imports the module skipvqvc_jax.data.corpus.
        for alias in node.names:
          candidate = f'{node.module}.{alias.name}'
          found.add(
            candidate
            if (PACKAGE.parent / candidate.replace('.', '/')).with_suffix('.py').exists()
            or (PACKAGE.parent / candidate.replace('.', '/')).is_dir()
            else node.module
          )
    graph[name] = found - {name}
  return graph


def _wing(module: str) -> str | None:
  parts = module.split('.')
  return parts[1] if len(parts) > 1 else None


GRAPH = _imports()


def test_every_module_lives_in_a_wing():
  """No module beside the wings: the package's top holds only its __init__ (load, the wing order)."""
  loose = [m for m in GRAPH if _wing(m) is not None and _wing(m) not in WING_ORDER]
  assert not loose, f'modules outside the wings {WINGS}: {loose}'
  folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / '__init__.py').exists()}
  assert folders == set(WINGS), folders ^ set(WINGS)


@pytest.mark.parametrize('module', sorted(GRAPH))
def test_imports_only_go_down(module):
  wing = _wing(module)
  if wing is None:
    return
  for imported in GRAPH[module]:
    other = _wing(imported)
    if other is None or other == wing:
      continue
    assert WING_ORDER[other] <= WING_ORDER[wing], (
      f'{module} (wing {wing}) imports {imported} (wing {other}, above it in skipvqvc_jax.WINGS)'
    )


def test_no_import_circle():
  state: dict[str, int] = {}  # 1: on the current path, 2: done

  def visit(module, path):
    state[module] = 1
    for imported in sorted(GRAPH.get(module, ())):
      if state.get(imported) == 1:
        raise AssertionError('import circle: ' + ' -> '.join(path + [module, imported]))
      if imported in GRAPH and not state.get(imported):
        visit(imported, path + [module])
    state[module] = 2

  for module in sorted(GRAPH):
    if not state.get(module):
      visit(module, [])


def _reachable(module: str) -> set[str]:
  seen, todo = set(), [module]
  while todo:
    for imported in GRAPH.get(todo.pop(), ()):
      if imported not in seen:
        seen.add(imported)
        todo.append(imported)
  return seen


@pytest.mark.parametrize(
  'module',
  [
    'skipvqvc_jax.inference.convert',
    'skipvqvc_jax.evaluation.evaluate',
    'skipvqvc_jax.apps.port',
    'skipvqvc_jax.apps.demo',
    'skipvqvc_jax.vocoders',
  ],
)
def test_inference_never_goes_through_training(module):
  reached = {m for m in _reachable(module) if _wing(m) == 'training'}
  assert reached <= INFERENCE_MAY_READ, reached - INFERENCE_MAY_READ


FUNCTION_LINES = 60  # a function or method is read at a glance
ROOM_LINES = 800  # a generous ceiling: a room is as long as its one job needs


def test_functions_are_short_and_rooms_not_huge():
  sizes = {path.name: len(path.read_text().splitlines()) for path in PACKAGE.rglob('*.py')}
  assert max(sizes.values()) <= ROOM_LINES, sorted(sizes.items(), key=lambda kv: -kv[1])[:3]
  long = {}
  for path in PACKAGE.rglob('*.py'):
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        lines = node.end_lineno - node.lineno + 1
        if lines > FUNCTION_LINES:
          long[f'{path.relative_to(PACKAGE)}:{node.name}'] = lines
  assert not long, f'functions over {FUNCTION_LINES} lines (split them by what they do): {long}'


# ---- ARCHITECTURE.md's "How to add ..." table, kept honest where a test can ----------------------

ARCHITECTURE = PACKAGE.parent / 'ARCHITECTURE.md'


def _how_to_add() -> dict[str, str]:
  text = ARCHITECTURE.read_text().split('## How to add', 1)[1]
  rows = [line.split('|')[1:3] for line in text.splitlines() if line.startswith('| a')]
  return {kind.strip(): files for kind, files in rows}


def test_how_to_add_names_each_kind_and_files_that_exist():
  table = _how_to_add()
  assert set(table) == {
    'a model',
    'a trainer',
    'a corpus layout',
    'a metric',
    'a task',
    'a vocoder',
    'a program',
  }
  for kind, files in table.items():
    named = [part.split('`')[0] for part in files.split('`')[1::2] if '/' in part]
    assert named, kind
    for path in named:
      assert (PACKAGE.parent / path).exists(), f'{kind}: {path} does not exist'


def test_every_model_declares_what_it_is():
  from skipvqvc_jax import models

  for name in models.names():
    cls = models.get_class(name)
    assert issubclass(cls, models.VQVCModel) and cls.name == name
    assert isinstance(cls.multi_scale, bool) and isinstance(cls.takes_content_mel, bool)
    assert len(cls.codebook_divisors) == 3 and cls.frames_multiple_of() % 8 == 0


def test_every_task_implements_the_contract():
  import typing

  from skipvqvc_jax.training import tasks

  members = {m for m in dir(tasks.Task) if not m.startswith('_')} | set(
    typing.get_type_hints(tasks.Task)
  )
  for name, cls in tasks.TASKS.items():
    missing = [m for m in members if not hasattr(cls, m) and m not in _set_on_self(cls)]
    assert not missing, f'{name} lacks {missing}'


def _set_on_self(cls) -> set[str]:
  """The attributes `cls`'s methods assign on `self` (instance attributes set in __init__), read
  from the code's syntax tree: a commented-out or quoted assignment does not count."""
  import inspect
  import textwrap

  tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
  return {
    target.attr
    for node in ast.walk(tree)
    if isinstance(node, ast.Assign | ast.AnnAssign)
    for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
    for target in ast.walk(target)
    if isinstance(target, ast.Attribute)
    and isinstance(target.value, ast.Name)
    and target.value.id == 'self'
  }


def test_every_metric_is_used_by_evaluation():
  import inspect

  from skipvqvc_jax.evaluation import metrics

  evaluation = (PACKAGE / 'evaluation' / 'evaluate.py').read_text() + (
    PACKAGE / 'evaluation' / 'listening.py'
  ).read_text()
  public = [
    n
    for n, f in inspect.getmembers(metrics, inspect.isfunction)
    if f.__module__ == metrics.__name__ and not n.startswith('_')
  ]
  # used by the others
  helpers = {
    'mel_cepstrum',
    'cepstral_distortion_dtw',
    'world_mel_cepstrum',
    'words',
    'edit_distance',
  }
  assert [n for n in public if n not in helpers and n not in evaluation] == []


def test_every_program_imports_beside_the_others():
  """The programs define their flags when run, not at import: importing all of them in one process
  (a test, a notebook) defines no flag twice (--model, --out, --step, --overwrite are several's)."""
  import importlib

  programs = sorted(p.stem for p in (PACKAGE / 'apps').glob('*.py') if p.stem != '__init__')
  for name in programs:
    importlib.import_module(f'skipvqvc_jax.apps.{name}')
  assert {'main', 'port', 'demo', 'stats'} <= set(programs)


def test_tests_live_in_the_wing_of_what_they_test():
  """tests/<wing>/ for a wing's tests; at the top only those of the whole package (its layout, the
  installed package, faults across wings, the benchmarks and the tuning corpus' script)."""
  tests = PACKAGE.parent / 'tests'
  folders = {p.name for p in tests.iterdir() if p.is_dir() and (p / '__init__.py').exists()}
  assert folders <= set(WINGS), folders - set(WINGS)
  top = {p.name for p in tests.glob('test_*.py')}
  whole_package = {
    'test_architecture.py',
    'test_package.py',
    'test_reliability.py',
    'test_benchmarks.py',
    'test_tuning_corpus.py',
    'test_docs.py',
    'test_notebook.py',
  }
  assert top <= whole_package, top - whole_package
