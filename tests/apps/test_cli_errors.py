"""Every program meets a user's mistake with one `error:` line and exit 1, never a traceback: a table
of bad inputs fed to the console scripts as a user types them, and the faults of the machine around
them (another locale, a read-only folder, a full disk)."""

import concurrent.futures
import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO, small_file_system

BIN = os.path.dirname(sys.executable)
DEMO = REPO / 'data' / 'demo_corpus'
SOURCE, TARGET = DEMO / 'awb' / 'awb_010.ogg', DEMO / 'slt' / 'slt_001.ogg'


def _program(name):
  path = os.path.join(BIN, name)
  if not os.path.exists(path):
    pytest.skip('console scripts are installed by pip install -e ".[test]"')
  return path


def _run(args, env=None, cwd=REPO):
  return subprocess.run(
    [str(a) for a in args],
    cwd=cwd,
    capture_output=True,
    text=True,
    timeout=600,
    env=None if env is None else dict(os.environ, **env),
  )


def _one_error(result) -> str:
  output = result.stdout + result.stderr
  lines = [line for line in output.splitlines() if line.startswith('error: ')]
  assert result.returncode == 1, output[-3000:]
  assert len(lines) == 1 and 'Traceback' not in output, output[-3000:]
  return lines[0]


@pytest.fixture(scope='module')
def bad_inputs(workdir, tmp_path_factory):
  """The files the table's mistakes name: a workdir whose config.json lost its trainer, one whose
  statistics are damaged, a config file with a syntax error and one whose get_config raises, a
  corrupt .pt."""
  root = tmp_path_factory.mktemp('bad_inputs')
  no_trainer = root / 'no_trainer'
  shutil.copytree(workdir, no_trainer, ignore=shutil.ignore_patterns('tensorboard', 'eval'))
  config = json.loads((no_trainer / 'config.json').read_text())
  del config['trainer']
  (no_trainer / 'config.json').write_text(json.dumps(config))
  damaged_stats = root / 'damaged_stats'
  shutil.copytree(workdir, damaged_stats, ignore=shutil.ignore_patterns('tensorboard', 'eval'))
  config = json.loads((damaged_stats / 'config.json').read_text())
  config['trainer'] = 'mean_std'  # its conversion reads the run's stats.npz
  (damaged_stats / 'config.json').write_text(json.dumps(config))
  (damaged_stats / 'stats.npz').write_bytes(b'PK\x03\x04 cut short')
  (root / 'syntax.py').write_text('def get_config(:\n')
  (root / 'raises.py').write_text('def get_config(preset=None):\n  return {}["model"]\n')
  (root / 'corrupt.pt').write_bytes(b'PK\x03\x04 not a checkpoint')
  (root / 'a_file').write_text('x')
  return root


TINY = ['--config=configs/vqvc_plus.py:tiny', '--workdir={root}/run']
# (program, arguments (`{x}` filled from the fixtures), what the one line must say)
MISTAKES = [
  ('skipvqvc', ['--config={root}/missing.py:tiny'], 'missing.py is not a file'),
  ('skipvqvc', ['--config={root}/syntax.py:tiny'], 'failed: SyntaxError'),
  ('skipvqvc', ['--config={root}/raises.py:tiny'], "raises.py failed: KeyError: 'model'"),
  ('skipvqvc', ['--config=configs/vqvc_plus.py:nope'], "unknown preset 'nope'"),
  ('skipvqvc', [*TINY, '--config.seed=-1'], '--config.seed=-1'),
  ('skipvqvc', [*TINY, '--config.compute_dtype=float8'], "--config.compute_dtype='float8'"),
  ('skipvqvc', [*TINY, '--config.model.chanel=8'], 'no field model.chanel; did you mean model.'),
  ('skipvqvc', [*TINY, '--eval_pairs=3'], '--eval_pairs is a flag of --mode=eval (skipvqvc-eval)'),
  ('skipvqvc-eval', ['--workdir={workdir}', '--source={source}'], '--source is a flag of --mode=c'),
  ('skipvqvc-eval', ['--workdir={workdir}', '--config.seed=1'], '--config.seed'),
  ('skipvqvc-convert', ['--mode=train'], 'skipvqvc-convert always runs --mode=convert'),
  ('skipvqvc', ['--mode=eval', '--workdir={root}/a_file'], 'a_file'),
  ('skipvqvc', ['--mode=eval'], '--mode=eval needs --model'),
  ('skipvqvc-convert', ['--source={source}'], 'needs --model'),
  (
    'skipvqvc-convert',
    ['--model={workdir}', '--source={root}/missing.wav', '--target={target}', '--output={out}'],
    'missing.wav',
  ),
  (
    'skipvqvc-convert',
    ['--model={root}/no_trainer', '--source={source}', '--target={target}', '--output={out}'],
    'config.json lacks trainer',
  ),
  (
    'skipvqvc-convert',
    ['--model={root}/damaged_stats', '--source={source}', '--target={target}', '--output={out}'],
    'stats.npz: cannot read these statistics',
  ),
  ('skipvqvc-preprocess', ['{root}/missing_corpus', '{root}/features'], 'missing_corpus'),
  ('skipvqvc-stats', ['{root}/missing_corpus'], 'missing_corpus'),
  ('skipvqvc-port', ['--checkpoint={root}/corrupt.pt', '--output={root}/ported'], 'corrupt.pt'),
  ('skipvqvc-fetch', ['no_such_model'], 'no_such_model'),
  ('skipvqvc-demo', [], 'give --model'),
]


def test_every_program_says_a_mistake_in_one_line(bad_inputs, workdir, tmp_path):
  names = dict(
    root=bad_inputs, workdir=workdir, source=SOURCE, target=TARGET, out=tmp_path / 'out.wav'
  )
  commands = [
    [_program(program), *(a.format(**names) for a in args)] for program, args, _ in MISTAKES
  ]
  # Side by side: each is a process that imports JAX.
  with concurrent.futures.ThreadPoolExecutor(4) as pool:
    results = list(pool.map(_run, commands))
  for (program, args, message), result in zip(MISTAKES, results):
    assert message in _one_error(result), (program, args, result.stderr[-2000:])
  assert not (tmp_path / 'out.wav').exists() and not (bad_inputs / 'ported').exists()
  assert not (bad_inputs / 'features').exists() and not (bad_inputs / 'run').exists()


def test_a_non_ascii_workdir_under_a_locale_that_is_not_utf8(small_features, tmp_path):
  """Under the C locale (Python's UTF-8 mode off: file names decoded as ASCII, as a Latin-1 locale
  decodes them as Latin-1), orbax's tensorstore could not open a non-ASCII workdir and every
  checkpoint save failed; a resume then took the intact checkpoints for damage. The programs
  re-execute themselves in UTF-8 mode, so the name means the same bytes to Python and tensorstore."""
  workdir = tmp_path / 'voix_de_chloé'
  env = dict(LC_ALL='C', LANG='C', PYTHONCOERCECLOCALE='0', PYTHONUTF8='0')
  flags = [
    '--config=configs/vqvc_plus.py:tiny',
    f'--workdir={workdir}',
    f'--config.data.train_dir={small_features / "train"}',
    f'--config.data.test_dir={small_features / "test"}',
    '--config.checkpoint_every_steps=2',
  ]
  for steps in (2, 4):
    result = _run([_program('skipvqvc'), *flags, f'--config.num_train_steps={steps}'], env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f'finished at step {steps}' in result.stderr
  assert sorted(os.listdir(workdir / 'checkpoints')) == ['2', '4']  # resumed: nothing set aside
  assert not (workdir / 'checkpoints.damaged').exists()
  out = tmp_path / 'sortie_é.wav'
  result = _run(
    [
      _program('skipvqvc-convert'),
      f'--model={workdir}',
      f'--source={SOURCE}',
      f'--target={TARGET}',
      f'--output={out}',
    ],
    env,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  assert out.stat().st_size > 1000


@pytest.fixture
def read_only_folder(tmp_path):
  """A folder on a read-only bind mount (needs root; root ignores permission bits, not this)."""
  source, mount = tmp_path / 'source', tmp_path / 'read_only'
  source.mkdir()
  mount.mkdir()
  for options in (['--bind'], ['-o', 'remount,bind,ro']):
    result = subprocess.run(
      ['mount', *options, str(source), str(mount)], capture_output=True, text=True
    )
    if result.returncode:
      subprocess.run(['umount', str(mount)], check=False, capture_output=True)
      pytest.skip(f'cannot make a read-only bind mount here: {result.stderr.strip()}')
  yield mount
  subprocess.run(['umount', str(mount)], check=False)


def test_a_read_only_folder_is_one_line_naming_it(workdir, small_corpus, read_only_folder):
  cases = [
    (
      [
        _program('skipvqvc-convert'),
        f'--model={workdir}',
        f'--source={SOURCE}',
        f'--target={TARGET}',
        f'--output={read_only_folder / "out.wav"}',
      ],
      f'{read_only_folder / "out.wav"}: Read-only file system',
    ),
    (
      [_program('skipvqvc-preprocess'), small_corpus, read_only_folder / 'features'],
      f'{read_only_folder / "features"}',
    ),
    (
      [
        _program('skipvqvc'),
        '--config=configs/vqvc_plus.py:tiny',
        f'--workdir={read_only_folder / "run"}',
      ],
      f'{read_only_folder / "run"}',
    ),
  ]
  with concurrent.futures.ThreadPoolExecutor(3) as pool:
    results = list(pool.map(_run, [args for args, _ in cases]))
  for (_, message), result in zip(cases, results):
    error = _one_error(result)
    assert message in error and 'choose a folder this user can write' in error, error


@pytest.fixture
def full_disk(tmp_path):
  """A 2 MiB file system of its own, to fill."""
  with small_file_system(tmp_path / 'disk', '2m') as mount:
    yield mount


def test_a_full_disk_while_converting_or_evaluating_is_one_line(workdir, full_disk):
  """Was `soundfile.LibsndfileError: System error.` (libsndfile's failed write has no errno)."""
  run = full_disk / 'run'
  shutil.copytree(workdir, run, ignore=shutil.ignore_patterns('tensorboard', 'eval'))
  free = shutil.disk_usage(full_disk).free
  (full_disk / 'filler').write_bytes(b'\0' * max(0, free - 100_000))  # room for a few PNGs only
  result = _run(
    [
      _program('skipvqvc-convert'),
      f'--model={run}',
      f'--source={SOURCE}',
      f'--target={TARGET}',
      f'--output={full_disk / "out.wav"}',
    ]
  )
  assert f'{full_disk / "out.wav"}: No space left on device; free some space' in _one_error(result)
  assert not [p for p in os.listdir(full_disk) if p.startswith('.out.wav')]  # no temporary left
  result = _run([_program('skipvqvc'), '--mode=eval', f'--workdir={run}'])
  assert 'No space left on device; free some space' in _one_error(result)
  assert sorted(os.listdir(run / 'checkpoints')) == sorted(os.listdir(workdir / 'checkpoints'))
