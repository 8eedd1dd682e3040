"""The package as a user meets it: console scripts, presets from anywhere, --help, file modes, a workdir
that moves, speaker folder names, the compilation cache."""

import os
import shutil
import stat
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from skipvqvc_jax.core import errors, fileio
from skipvqvc_jax.data import preprocessing
from skipvqvc_jax.store import checkpoints
from tests.conftest import REPO

DEMO = REPO / 'data' / 'demo_corpus'
BIN = os.path.dirname(sys.executable)


def _script(name):
  path = os.path.join(BIN, name)
  if not os.path.exists(path):
    pytest.skip('console scripts are installed by pip install -e ".[test]"')
  return path


def _run(args, cwd, env=None):
  return subprocess.run(
    args, cwd=cwd, capture_output=True, text=True, timeout=600, env=dict(os.environ, **(env or {}))
  )


def _train_tiny(preset: str, corpus, steps: int, workdir, cwd):
  """The console script trains `steps` of `preset` straight from the audio of `corpus`."""
  flags = [f'--config={preset}', f'--config.data.train_dir={corpus}']
  return _run(
    [_script('skipvqvc'), *flags, f'--config.num_train_steps={steps}', f'--workdir={workdir}'], cwd
  )


@pytest.fixture(scope='module')
def moved_run(small_corpus, tmp_path_factory):
  """The console script trains 2 steps from the repository root, straight from audio; then the
  workdir is moved. Returns (the moved workdir, the training command's result)."""
  root = tmp_path_factory.mktemp('package')
  result = _train_tiny('configs/vqvc_plus.py:tiny', small_corpus, 2, root / 'run', REPO)
  assert result.returncode == 0, result.stderr[-3000:]
  os.rename(root / 'run', root / 'moved')
  return root / 'moved', result


def test_console_script_trains_from_the_repository_and_says_what_next(moved_run):
  workdir, result = moved_run
  log = result.stderr
  assert 'preprocessing: 24/24 files (100%)' in log  # the long phase inside training reports
  assert 'steps/s' in log
  last = [line for line in log.splitlines() if line.strip()][-1]
  assert 'next: evaluate with skipvqvc --mode=eval --model=' in last and '--mode=convert' in last
  # The data paths inside the workdir are stored relative to it, so it could move.
  raw = fileio.load_json(workdir / 'config.json')['data']
  assert raw['train_dir'] == os.path.join('features', 'train')
  assert raw['test_dir'] == os.path.join('features', 'test')


def test_an_installed_preset_is_named_from_any_directory(moved_run, small_corpus, tmp_path):
  workdir, _ = moved_run
  # The demo presets' corpus is the repository's: elsewhere, one line says so, and nothing is written.
  result = _run(
    [_script('skipvqvc'), '--config=vqvc_plus.py:demo', f'--workdir={tmp_path / "demo"}'],
    cwd=tmp_path,
  )
  assert result.returncode == 1 and 'Traceback' not in result.stderr
  assert 'comes with the repository, not the installed package' in result.stderr.splitlines()[-1]
  assert not (tmp_path / 'demo').exists()
  result = _train_tiny('vqvc_plus.py:tiny', small_corpus, 3, workdir, tmp_path)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'resumed from step 2' in result.stderr
  assert checkpoints.latest_step(str(workdir)) == 3


def test_a_moved_workdir_converts_and_evaluates_from_another_directory(moved_run, tmp_path):
  workdir, _ = moved_run
  elsewhere = tmp_path / 'elsewhere'
  elsewhere.mkdir()
  result = _run(
    [
      _script('skipvqvc-convert'),
      f'--workdir={os.path.relpath(workdir, elsewhere)}',
      f'--source={DEMO / "awb" / "awb_002.ogg"}',
      f'--target={DEMO / "slt" / "slt_003.ogg"}',
      '--output=out.wav',
    ],
    cwd=elsewhere,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  assert sf.info(elsewhere / 'out.wav').samplerate == 22050
  result = _run(
    [
      _script('skipvqvc-eval'),
      f'--workdir={os.path.relpath(workdir, elsewhere)}',
      '--eval_pairs=2',
    ],
    cwd=elsewhere,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  # It ends with the headline figures, and the report's path last, where the eye lands: plain lines,
  # without absl's prefix of level, time, thread and source (and without JAX's backend probe).
  lines = result.stderr.strip().splitlines()
  assert not [line for line in lines if line.startswith(('I1', 'W1', 'Unable to initialize'))]
  step = checkpoints.latest_step(str(workdir))
  report = workdir / 'eval' / f'step_{step}' / 'report.html'
  assert lines[-1] == f'report: {os.path.relpath(report, elsewhere)}' and report.is_file()
  metrics = fileio.load_json(report.parent / 'metrics.json')
  first = lines.index(f'step {step}: 12 test utterances')
  assert metrics['test_utterances'] == 12
  assert lines[first + 1] == f'reconstruction: L1 {metrics["recon_l1_logmel"]:.3f} (log10 mel)'
  # The data really gone: one line that names the missing folder.
  shutil.move(workdir / 'features' / 'test', tmp_path / 'test_aside')
  try:
    result = _run(
      [sys.executable, str(REPO / 'main.py'), '--mode=eval', f'--workdir={workdir}'], cwd=elsewhere
    )
  finally:
    shutil.move(tmp_path / 'test_aside', workdir / 'features' / 'test')
  assert result.returncode == 1 and 'Traceback' not in result.stderr
  error = [line for line in result.stderr.splitlines() if line.startswith('error: ')]
  assert (
    len(error) == 1 and str(workdir / 'features' / 'test') in error[0] and 'is gone' in error[0]
  )


TRAINING_FLAGS = ['--config', '--coordinator_address', '--join_timeout']


@pytest.mark.parametrize(
  'program, own, absent, usage',
  [
    (
      'skipvqvc',
      ['--config', '--workdir', '--mode', '--source', '--compilation_cache_max_gb', '--version'],
      [],
      'skipvqvc --config=configs/vqvc_plus.py:demo',
    ),
    (
      'skipvqvc-convert',
      ['--model', '--source', '--target', '--output', '--pairs', '--vocoder', '--version'],
      [*TRAINING_FLAGS, '--mode', '--eval_pairs'],
      'skipvqvc-convert --model=DIR --source=a.wav',
    ),
    (
      'skipvqvc-eval',
      ['--model', '--step', '--vocoder', '--eval_pairs', '--version'],
      [*TRAINING_FLAGS, '--mode', '--source'],
      'skipvqvc-eval --model=DIR',
    ),
    (
      'skipvqvc-preprocess',
      ['--test_speakers', '--workers', '--min_frames', '--version'],
      TRAINING_FLAGS,
      'INPUT_DIR OUTPUT_DIR',
    ),
    (
      'skipvqvc-stats',
      ['--definition', '--output', '--overwrite', '--version'],
      [*TRAINING_FLAGS, '--out'],  # the old spelling is accepted, not offered
      'skipvqvc-stats FEATURES',
    ),
    (
      'skipvqvc-port',
      ['--checkpoint', '--output', '--architecture', '--trainer', '--version'],
      [*TRAINING_FLAGS, '--out', '--model'],
      None,
    ),
    ('skipvqvc-fetch', ['--file', '--version'], TRAINING_FLAGS, 'skipvqvc-fetch'),
    (
      'skipvqvc-demo',
      ['--model', '--vocoder', '--port', '--version'],
      [*TRAINING_FLAGS, '--vocoders'],
      None,
    ),
  ],
)
def test_each_program_describes_itself(program, own, absent, usage, tmp_path):
  result = _run([_script(program), '--help'], cwd=tmp_path)
  assert result.returncode == 0, result.stderr
  assert 'Try --helpfull' in result.stdout  # the short help, not every library's flags
  listed = {
    line.split(':', 1)[0].strip().replace('--[no]', '--')
    for line in result.stdout.splitlines()
    if line.startswith('  --')
  }
  assert set(own) <= listed, set(own) - listed
  assert not set(absent) & listed, set(absent) & listed
  if usage:
    assert usage in result.stdout
  import skipvqvc_jax

  version = _run([_script(program), '--version'], cwd=tmp_path)
  assert version.returncode == 0 and version.stdout.split() == [
    program,
    '(skipvqvc_jax)',
    skipvqvc_jax.__version__,
  ]


def test_the_version_is_the_packages_and_the_changelogs():
  import importlib.metadata
  import re

  import skipvqvc_jax

  assert importlib.metadata.version('skipvqvc_jax') == skipvqvc_jax.__version__
  newest = re.search(r'^## (\S+)', (REPO / 'CHANGELOG.md').read_text(), re.M).group(1)
  assert newest == skipvqvc_jax.__version__


def test_the_package_imports_and_locks_without_fcntl(tmp_path):
  """Windows has no fcntl: importing the package and its programs, and taking a workdir's lock,
  must not need it (simulated here by making `import fcntl` fail)."""
  script = (
    'import sys; sys.modules["fcntl"] = None\n'
    'import skipvqvc_jax, skipvqvc_jax.apps.main, skipvqvc_jax.training.loop, skipvqvc_jax.inference.convert\n'
    'from skipvqvc_jax.core import locks\n'
    'with locks.for_workdir(sys.argv[1]):\n'
    '  second = locks.for_workdir(sys.argv[1])\n'
    '  try:\n'
    '    second.acquire()\n'
    '  except skipvqvc_jax.core.errors.TrainingError as e:\n'
    '    print("refused:", e)\n'
  )
  result = _run([sys.executable, '-c', script, str(tmp_path / 'w')], cwd=REPO)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'refused:' in result.stdout and 'is in use by another run (pid' in result.stdout


def test_main_py_help_matches_the_console_script(tmp_path):
  result = _run([sys.executable, str(REPO / 'main.py'), '--help'], cwd=tmp_path)
  assert result.returncode == 0 and '--workdir: Where checkpoints' in result.stdout


def _modes(root):
  return {
    os.path.relpath(os.path.join(folder, name), root): stat.S_IMODE(
      os.stat(os.path.join(folder, name)).st_mode
    )
    for folder, dirs, files in os.walk(root)
    for name in files + dirs
  }


@pytest.mark.parametrize(
  'umask, file_mode, dir_mode', [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)]
)
def test_outputs_follow_the_umask(small_corpus, tmp_path, umask, file_mode, dir_mode):
  """Features, split, statistics, manifest (atomic writes) and a model directory (orbax, staged
  in a temporary folder) get the modes the user's umask gives new files."""
  script = (
    'import os, sys; os.umask(int(sys.argv[3], 8)); '
    'from skipvqvc_jax import models; from skipvqvc_jax.data import preprocessing; '
    'from skipvqvc_jax.store import checkpoints; '
    'preprocessing.preprocess(sys.argv[1], sys.argv[2] + "/features", workers=1, progress=False, '
    'log=lambda _: None); '
    'checkpoints.save_model(sys.argv[2] + "/model", models.build("vqvc+", channel=16, '
    'n_embed=16))'
  )
  result = _run(
    [sys.executable, '-c', script, str(small_corpus), str(tmp_path / 'out'), oct(umask)], cwd=REPO
  )
  assert result.returncode == 0, result.stderr[-3000:]
  modes = _modes(tmp_path / 'out')
  assert modes['features/manifest.json'] == modes['features/train/awb_001.npy'] == file_mode
  assert modes['features/split.json'] == modes['features/stats.npz'] == file_mode
  assert modes['model/model.json'] == file_mode and modes['model'] == dir_mode
  assert modes['features/train'] == dir_mode


def test_speaker_flags_take_folder_names_as_on_disk(small_corpus, tmp_path):
  corpus_dir = tmp_path / 'corpus'
  shutil.copytree(small_corpus, corpus_dir)
  os.rename(corpus_dir / 'esm1', corpus_dir / 'es_m1')
  result = _run(
    [
      _script('skipvqvc-preprocess'),
      str(corpus_dir),
      str(tmp_path / 'out'),
      '--test_speakers=es_m1,slt',
      '--workers=1',
      '--noprogress',
    ],
    cwd=tmp_path,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  renamed = [line for line in result.stdout.splitlines() if 'renamed' in line]
  assert len(renamed) == 1 and 'es_m1 -> es-m1' in renamed[0]
  assert fileio.load_json(tmp_path / 'out' / 'split.json')['test'] == ['es-m1', 'slt']
  with pytest.raises(errors.CorpusError, match='names speakers with no audio: nobody'):
    preprocessing.preprocess(
      str(corpus_dir),
      str(tmp_path / 'out2'),
      test_speakers=['nobody'],
      progress=False,
      log=lambda _: None,
    )


def _size(folder) -> int:
  return sum(p.stat().st_size for p in folder.rglob('*') if p.is_file())


def test_conversion_keeps_its_compiled_programs(moved_run, tmp_path):
  workdir, _ = moved_run
  env = {k: v for k, v in os.environ.items() if not k.startswith('JAX_COMPILATION_CACHE')}

  def convert(*flags):
    result = subprocess.run(
      [
        sys.executable,
        str(REPO / 'main.py'),
        '--mode=convert',
        f'--workdir={workdir}',
        f'--source={DEMO / "awb" / "awb_002.ogg"}',
        f'--target={DEMO / "slt" / "slt_003.ogg"}',
        f'--output={tmp_path / "o.wav"}',
        '--overwrite',  # the same conversion, again
        *flags,
      ],
      env=env,
      cwd=tmp_path,
      capture_output=True,
      text=True,
      timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result

  cache = tmp_path / 'cache'
  convert(f'--compilation_cache_dir={cache}')
  assert len(os.listdir(cache)) >= 3  # the target's encoding, the conversion, Griffin-Lim at least
  # An entry without its access time (a run with no cap wrote it, or one cut short between the two
  # files) made JAX's capped cache fail every later write: the cache stopped growing for good.
  entries = sorted(f for f in os.listdir(cache) if f.endswith('-cache'))
  (cache / entries[0].replace('-cache', '-atime')).unlink()
  for suffix in ('-cache', '-atime'):  # a program this run must compile and write again
    (cache / entries[-1].replace('-cache', suffix)).unlink()
  result = convert(f'--compilation_cache_dir={cache}')
  assert 'Error writing persistent compilation cache' not in result.stderr, result.stderr[-3000:]
  assert (cache / entries[-1]).is_file() and (
    cache / entries[0].replace('-cache', '-atime')
  ).is_file()
  # Bounded: with a cap of half of what they take, the least recently used go.
  full = _size(cache)
  capped = tmp_path / 'capped'
  convert(f'--compilation_cache_dir={capped}', f'--compilation_cache_max_gb={full / 2e9}')
  assert 0 < _size(capped) <= full / 2, (_size(capped), full)
  off = tmp_path / 'off'
  env['XDG_CACHE_HOME'] = str(off)
  convert('--nocompilation_cache')
  assert not off.exists()
  with sf.SoundFile(tmp_path / 'o.wav') as f:
    assert f.samplerate == 22050 and np.isfinite(f.read()).all()


def test_a_wheel_installs_and_converts_without_the_repository(workdir, tmp_path):
  """The wheel alone (built from a copy of what it packages, installed without the repository on the
  path): its console script converts with a trained model, and the demo preset it ships says that its
  corpus comes with the repository."""
  source = tmp_path / 'source'
  source.mkdir()
  for name in ('pyproject.toml', 'README.md', 'LICENSE'):
    shutil.copy(REPO / name, source)
  shutil.copytree(
    REPO / 'skipvqvc_jax', source / 'skipvqvc_jax', ignore=shutil.ignore_patterns('__pycache__')
  )
  pip = [sys.executable, '-m', 'pip', '--disable-pip-version-check', '-q']
  result = _run([*pip, 'wheel', '--no-deps', '-w', str(tmp_path / 'dist'), str(source)], tmp_path)
  assert result.returncode == 0, result.stderr[-3000:]
  (wheel,) = (tmp_path / 'dist').glob('skipvqvc_jax-*.whl')
  installed = tmp_path / 'installed'
  result = _run([*pip, 'install', '--no-deps', '--target', str(installed), str(wheel)], tmp_path)
  assert result.returncode == 0, result.stderr[-3000:]

  user = tmp_path / 'user'  # a folder of the user's: two recordings, no repository
  user.mkdir()
  shutil.copy(DEMO / 'awb' / 'awb_002.ogg', user / 'mine.ogg')
  shutil.copy(DEMO / 'slt' / 'slt_003.ogg', user / 'voice.ogg')
  env = {'PYTHONPATH': str(installed)}
  where = _run(
    [sys.executable, '-c', 'import skipvqvc_jax; print(skipvqvc_jax.__file__)'], user, env
  )
  assert where.stdout.startswith(str(installed)), where.stdout + where.stderr
  convert = installed / 'bin' / 'skipvqvc-convert'
  result = _run(
    [
      sys.executable,
      str(convert),
      f'--model={workdir}',
      '--source=mine.ogg',
      '--target=voice.ogg',
      '--output=converted.wav',
    ],
    user,
    env,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  assert sf.info(user / 'converted.wav').samplerate == 22050
  result = _run(
    [sys.executable, str(installed / 'bin' / 'skipvqvc'), '--config=vqvc_plus.py:demo'], user, env
  )
  assert result.returncode == 1 and 'comes with the repository' in result.stderr
