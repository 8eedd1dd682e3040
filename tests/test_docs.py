"""Every command line of README.md and docs/ that runs one of the programs parses as written: its flags
are flags of that program (not an old spelling), its --config names a preset file and preset that
exist, and its --config.FIELD overrides name fields of that preset. (The pod recipe also runs:
tests/core/test_cloud_storage.py.)"""

import functools
import importlib
import os
import shlex
import subprocess
import sys

import pytest

from tests.conftest import REPO

PAGES = [REPO / 'README.md', *sorted((REPO / 'docs').glob('*.md'))]
# How a page starts each program, and the console script whose --help lists its flags.
PROGRAMS = {
  'python main.py': 'skipvqvc',
  'python preprocess.py': 'skipvqvc-preprocess',
  'python -m skipvqvc_jax.apps.port': 'skipvqvc-port',
  **{
    name: name for name in ('skipvqvc', 'skipvqvc-convert', 'skipvqvc-eval', 'skipvqvc-preprocess')
  },
  **{name: name for name in ('skipvqvc-stats', 'skipvqvc-port', 'skipvqvc-fetch', 'skipvqvc-demo')},
}
ABSL = {'help', 'helpfull', 'verbosity', 'v', 'logtostderr', 'log_dir', 'version'}


def _command_lines() -> list[tuple[str, str]]:
  """(where, command) for each line of a bash block that starts with a program (continuations
  joined, comments dropped)."""
  found = []
  for page in PAGES:
    blocks = page.read_text().split('```bash\n')[1:]
    for block in blocks:
      text = block.split('```', 1)[0].replace('\\\n', ' ')
      for line in text.splitlines():
        command = line.split('  #', 1)[0].strip()
        if any(command == p or command.startswith(p + ' ') for p in PROGRAMS):
          found.append((f'{page.name}: {command[:60]}', command))
  return found


@functools.cache
def _flags_of(program: str) -> set[str]:
  """The flags `program --help` lists (its own, as the docs should use them)."""
  script = os.path.join(os.path.dirname(sys.executable), program)
  if not os.path.exists(script):
    pytest.skip('the console scripts are installed by pip install -e ".[test]"')
  result = subprocess.run([script, '--help'], capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr
  return {
    line.split(':', 1)[0].strip().replace('--[no]', '--').lstrip('-')
    for line in result.stdout.splitlines()
    if line.startswith('  --')
  }


def _program(command: str) -> tuple[str, list[str]]:
  prefix = max((p for p in PROGRAMS if command == p or command.startswith(p + ' ')), key=len)
  return PROGRAMS[prefix], shlex.split(command[len(prefix) :].replace('$', ''))


COMMANDS = _command_lines()


def test_the_pages_have_commands_to_check():
  assert len(COMMANDS) > 30 and {_program(c)[0] for _, c in COMMANDS} >= {
    'skipvqvc',
    'skipvqvc-convert',
    'skipvqvc-eval',
    'skipvqvc-preprocess',
    'skipvqvc-port',
  }


@pytest.mark.parametrize('command', [c for _, c in COMMANDS], ids=[w for w, _ in COMMANDS])
def test_every_documented_command_parses(command):
  program, args = _program(command)
  known = _flags_of(program)
  config = None
  for arg in args:
    if not arg.startswith('--'):
      continue
    name, _, value = arg[2:].partition('=')
    if name == 'config' and ':' in value:
      path, preset = value.split(':', 1)
      module = importlib.import_module(f'skipvqvc_jax.configs.{path.split("/")[-1][:-3]}')
      assert preset in module.PRESETS, f'{command}: no preset {preset} in {path}'
      config = module.get_config(preset)
      continue
    if name.startswith('config.'):
      assert config is not None, f'{command}: --{name} before --config'
      field = config
      for part in name.split('.')[1:]:
        assert part in field, f'{command}: the config has no field {name[7:]}'
        field = field[part]
      continue
    bare = name[2:] if name.startswith('no') and name[2:] in known else name
    assert bare in known | ABSL, f'{command}: {program} has no flag --{name}'
