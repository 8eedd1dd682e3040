import contextlib
import glob
import os
import pathlib
import struct
import subprocess
import sys
import tempfile

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


def main_process(args: list, env=None, **kwargs) -> subprocess.Popen:
  """`python main.py ARGS` started in the repository, its stdout and stderr merged into one text pipe
  (what a user watching the run sees)."""
  return subprocess.Popen(
    [sys.executable, 'main.py', *map(str, args)],
    cwd=REPO,
    env=env,
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    text=True,
    **kwargs,
  )


def run_in_repo(args: list, timeout: int = 600, **kwargs) -> subprocess.CompletedProcess:
  """A command run in the repository (a real process, as a user runs it), its output captured as
  text; `timeout` seconds at most."""
  return subprocess.run(
    [str(a) for a in args], cwd=REPO, capture_output=True, text=True, timeout=timeout, **kwargs
  )


# Tests build the same small models many times, in this process and in subprocesses: a persistent
# compilation cache turns every compile after the first into a disk read.
os.environ.setdefault(
  'JAX_COMPILATION_CACHE_DIR', os.path.join(tempfile.gettempdir(), 'skipvqvc_jax_test_xla_cache')
)
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES', '0')
# The tests' models are tiny: compiling is most of their time, running little. XLA's cheaper CPU
# optimisation (measured on tests/training/test_loop.py: 22% less wall time, 30% less CPU) keeps every result
# within the tests' tolerances (the parity tests included); subprocesses inherit it.
FAST_COMPILE = '--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true'
os.environ['XLA_FLAGS'] = f'{os.environ.get("XLA_FLAGS", "")} {FAST_COMPILE}'.strip()


def devices_env(count: int, env=None) -> dict:
  """`env` (default os.environ) with JAX on `count` simulated CPU devices."""
  env = dict(os.environ if env is None else env)
  env['XLA_FLAGS'] = f'{env.get("XLA_FLAGS", "")} --xla_force_host_platform_device_count={count}'
  env['JAX_PLATFORMS'] = 'cpu'
  return env


@pytest.fixture(scope='session')
def parity_dir() -> pathlib.Path:
  """The original's golden data: ../shared/parity beside the checkout (or $SKIPVQVC_PARITY_DIR)."""
  path = pathlib.Path(os.environ.get('SKIPVQVC_PARITY_DIR', REPO.parent / 'shared' / 'parity'))
  if not (path / 'manifest.json').is_file():
    pytest.skip(f'golden parity data not found at {path} (set SKIPVQVC_PARITY_DIR to its folder)')
  return path


def assert_close(actual, expected, what: str, atol: float) -> None:
  """Same shape and max abs error <= atol, naming the array."""
  actual = np.asarray(actual)
  assert actual.shape == expected.shape, f'{what}: shape {actual.shape} != {expected.shape}'
  err = np.abs(actual - expected).max()
  assert err <= atol, f'{what}: max abs error {err:.3g} > {atol}'


def assert_gradients_match(grads_model, golden: dict) -> dict:
  """Every gradient the original computed (`grad/*`), by the original's names, against ours (held in
  a model merged from the gradients); returns the golden gradients by name."""
  from skipvqvc_jax.store import porting

  ours = porting.export_state_dict(grads_model)
  expected_grads = {k.removeprefix('grad/'): v for k, v in golden.items() if k.startswith('grad/')}
  # Parameters the original never uses get no gradient there and do not exist here.
  assert set(expected_grads) == set(ours), set(expected_grads) ^ set(ours)
  for key, expected in expected_grads.items():
    np.testing.assert_allclose(
      ours[key], expected, rtol=1e-3, atol=1e-6 + 1e-4 * np.abs(expected).max(), err_msg=key
    )
  return expected_grads


def assert_step_matches(stepped: dict, g: dict, golden_grads: dict, omitted=None) -> None:
  """Our weights after one clipped Adam step (`stepped`, by the original's names) against the
  golden `step1_param/*`: to 1e-6 where the clipped gradient is clearly non-zero (where it is ~0,
  Adam's first step is +-lr by the gradient's sign, which rounding may flip: 2e-3). `omitted`: the
  manifest's sums of parameters too big to store."""
  clip = float(g['train/clip_coef'])
  for key, ours in stepped.items():
    if omitted and key in omitted:
      expected, before = omitted[key], g[f'param/{key}']
      assert int((ours != before).sum()) == expected['changed_elements'], key
      np.testing.assert_allclose(
        np.abs(ours.astype(np.float64) - before).sum(),
        expected['sum_abs_delta'],
        rtol=1e-4,
        err_msg=key,
      )
      np.testing.assert_allclose(
        ours.astype(np.float64).sum(), expected['sum'], atol=1e-3, err_msg=key
      )
      continue
    if f'step1_param/{key}' not in g:  # the step left it as it was (no gradient): not stored
      np.testing.assert_array_equal(ours, g[f'param/{key}'], err_msg=key)
      continue
    golden_step = g[f'step1_param/{key}']
    clear = np.abs(clip * golden_grads.get(key, np.zeros_like(golden_step))) > 1e-5
    np.testing.assert_allclose(ours[clear], golden_step[clear], atol=1e-6, err_msg=key)
    np.testing.assert_allclose(ours, golden_step, atol=2e-3, err_msg=key)


def golden_loss_and_gradients(trainer, graphdef, params, rest, inputs: dict, g: dict):
  """Our `trainer`'s loss on `inputs` (latent weight 0.1) against a golden step's: the loss, the latent
  loss, the gradient norm and every gradient. Returns (aux, grads, the golden's gradients)."""
  import jax
  import optax
  from flax import nnx

  def loss_fn(params):
    return trainer.loss(nnx.merge(graphdef, params, rest), inputs, jax.random.key(0), 0.1)

  (loss, aux), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(params)
  assert_close(loss, g['train/loss'], 'loss', 1e-5)
  assert_close(aux['latent_loss'], g['train/latent_loss'], 'latent_loss', 1e-5)
  np.testing.assert_allclose(optax.tree.norm(grads), g['train/grad_total_norm'], rtol=1e-4)
  return aux, grads, assert_gradients_match(nnx.merge(graphdef, grads, rest), g)


def assert_adam_step_matches(graphdef, params, rest, grads, g: dict, golden_grads: dict) -> None:
  """Our optimizer's first step from `params` with `grads` against the golden's weights after it."""
  import optax
  from flax import nnx

  from skipvqvc_jax.configs import default
  from skipvqvc_jax.store import porting
  from skipvqvc_jax.training.tasks import voice_conversion

  tx = voice_conversion.make_optimizer(default.get_config())
  updates, _ = tx.update(grads, tx.init(params), params)
  stepped = porting.export_state_dict(
    nnx.merge(graphdef, optax.apply_updates(params, updates), rest)
  )
  assert_step_matches(stepped, g, golden_grads)


def load_golden(parity_dir: pathlib.Path, name: str) -> dict:
  """The arrays of a golden file scripts/make_parity_data.py writes (pitch/, lj/): skips where the
  folder lacks it (../shared/parity has pitch/, not lj/)."""
  path = parity_dir / name
  if not path.is_file():
    pytest.skip(f'{path} not found: make it with scripts/make_parity_data.py from the original')
  with np.load(path, allow_pickle=False) as data:
    return {k: data[k] for k in data.files}


def parity_file(parity_dir: pathlib.Path, name: str) -> pathlib.Path:
  """A file of the golden folder; skips when a folder made by scripts/make_parity_data.py lacks it
  (the feature and MelGAN goldens need melgan-neurips, which that script does not run)."""
  path = parity_dir / name
  if not path.is_file():
    pytest.skip(f'{path} not found (scripts/make_parity_data.py writes only the model goldens)')
  return path


@pytest.fixture(scope='session')
def small_corpus(tmp_path_factory) -> pathlib.Path:
  """A slice of the bundled demo corpus: 4 speakers x 6 utterances (audio files on disk)."""
  import shutil

  root = tmp_path_factory.mktemp('small_corpus')
  for speaker in ('awb', 'slt', 'esf2', 'esm1'):
    (root / speaker).mkdir()
    for i in range(1, 7):
      name = f'{speaker}_{i:03d}.ogg'
      shutil.copy(REPO / 'data' / 'demo_corpus' / speaker / name, root / speaker / name)
  return root


@pytest.fixture(scope='session')
def small_features(small_corpus, tmp_path_factory) -> pathlib.Path:
  """small_corpus preprocessed, with esf2 and esm1 as the unseen test speakers."""
  return preprocess_small(small_corpus, tmp_path_factory.mktemp('small_features'))


def quiet_preprocess(corpus, out, *args, **kwargs) -> dict:
  """`preprocessing.preprocess` in this process, one worker, without progress or log lines; returns
  the manifest."""
  from skipvqvc_jax.data import preprocessing

  return preprocessing.preprocess(
    str(corpus), str(out), *args, workers=1, progress=False, log=lambda _: None, **kwargs
  )


def preprocess_small(corpus, out, **kwargs):
  """A small corpus preprocessed quietly in this process, esf2 and esm1 held out; returns `out`."""
  quiet_preprocess(corpus, out, test_speakers=['esf2', 'esm1'], **kwargs)
  return out


def tiny_config(features, preset='vqvc_plus.py:tiny', **overrides):
  """A `tiny` preset (seconds to train) reading the features in `features`/{train,test}."""
  import importlib

  module, name = preset.split(':')
  config = importlib.import_module('skipvqvc_jax.configs.' + module.removesuffix('.py')).get_config(
    name
  )
  overrides = {
    'data.train_dir': str(features / 'train'),
    'data.test_dir': str(features / 'test'),
    **overrides,
  }
  for key, value in overrides.items():
    config.update_from_flattened_dict({key: value})
  return config


@pytest.fixture(scope='session')
def workdir(small_features, tmp_path_factory):
  """A tiny voice-conversion run of 4 steps (checkpoints at 2 and 4): what conversion and
  evaluation tests restore."""
  from skipvqvc_jax.training import loop

  path = tmp_path_factory.mktemp('run')
  loop.train_and_evaluate(tiny_config(small_features, num_train_steps=4), str(path))
  return path


def main_flags(features, workdir, preset='vqvc_plus.py:tiny', **overrides):
  """main.py flags that train tiny_config(features, preset, **overrides) in `workdir`."""
  overrides = {
    'data.train_dir': features / 'train',
    'data.test_dir': features / 'test',
    **overrides,
  }
  return [f'--config=configs/{preset}', f'--workdir={workdir}'] + [
    f'--config.{k}={v}' for k, v in overrides.items()
  ]


@pytest.fixture(scope='session')
def ported_melgan(parity_dir, tmp_path_factory):
  """The golden MelGAN generator ported with the CLI: (model directory, the CLI's stdout)."""
  import sys

  out = tmp_path_factory.mktemp('melgan') / 'melgan'
  result = run_in_repo(
    [
      sys.executable,
      '-m',
      'skipvqvc_jax.apps.port',
      f'--checkpoint={parity_file(parity_dir, "melgan_generator.npz")}',
      f'--output={out}',
      '--architecture=melgan',
      '--prefix=param/',
    ],
    timeout=300,
  )
  assert result.returncode == 0, result.stderr
  return out, result.stdout


def read_events(workdir):
  """Every summary value in the run's TensorBoard event files: {tag: [(step, value proto)]}."""
  from tensorboardX.proto import event_pb2

  values = {}
  for path in glob.glob(os.path.join(workdir, 'tensorboard', 'events.out.tfevents.*')):
    with open(path, 'rb') as f:
      while header := f.read(8):
        (length,) = struct.unpack('<Q', header)
        f.read(4)  # length checksum
        event = event_pb2.Event.FromString(f.read(length))
        f.read(4)  # data checksum
        for value in event.summary.value:
          values.setdefault(value.tag, []).append((event.step, value))
  return values


@contextlib.contextmanager
def small_file_system(folder: pathlib.Path, size: str):
  """A file system of its own of `size` (a tmpfs; needs root) mounted at `folder`, to fill; skips
  the test where none can be mounted."""
  folder.mkdir()
  result = subprocess.run(
    ['mount', '-t', 'tmpfs', '-o', f'size={size}', 'tmpfs', str(folder)],
    capture_output=True,
    text=True,
  )
  if result.returncode:
    pytest.skip(f'cannot mount a small tmpfs here: {result.stderr.strip()}')
  try:
    yield folder
  finally:
    subprocess.run(['umount', str(folder)], check=False)
