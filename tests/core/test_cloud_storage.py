"""Runs in a bucket: preprocessing, training, a SIGKILL mid-checkpoint and an exact resume, conversion,
evaluation, the workdir lock, and the pod recipe of docs/install.md (two processes writing one workdir), all against a Cloud Storage emulator this module
starts on loopback (tests/gcs_emulator.py)."""

import importlib.util
import io
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import jax
import numpy as np
import pytest
import soundfile as sf
from flax import nnx

from skipvqvc_jax.core import locks, storage
from skipvqvc_jax.core.errors import TrainingError
from skipvqvc_jax.data import f0, preprocessing
from skipvqvc_jax.store import checkpoints, summaries
from skipvqvc_jax.training import input_pipeline, loop
from tests import gcs_emulator
from tests.conftest import (
  REPO,
  devices_env,
  main_process,
  quiet_preprocess,
  run_in_repo,
  tiny_config,
)
from tests.gcs_emulator import emulator_env

for _package, _extra in (('gcsfs', 'gcs'), ('gcp_storage_emulator', 'test')):
  if importlib.util.find_spec(_package) is None:
    pytest.skip(f'{_package} is not installed (the [{_extra}] extra)', allow_module_level=True)

BUCKET = 'skipvqvc-test'
SLOW_PREFIX = 'killed/checkpoints/3/'  # the emulator holds the first upload of it 5 s
HOLD_SECONDS = 5
STEPS = 6


_EMULATOR = {}  # the emulator's process, for the tests that stop it answering


_free_port = gcs_emulator.free_port


@pytest.fixture(scope='module')
def gcs(tmp_path_factory):
  """The emulator's environment, set in this process (and given to subprocesses) for the module."""
  port = _free_port()
  folder = tmp_path_factory.mktemp('emulator')
  log = open(folder / 'emulator.log', 'w')
  _EMULATOR['uploads'] = folder / 'uploads.log'
  try:
    server = gcs_emulator.start(
      port, BUCKET, SLOW_PREFIX, str(HOLD_SECONDS), log=log, upload_log=_EMULATOR['uploads']
    )
  except RuntimeError as e:
    pytest.fail(str(e))
  env = emulator_env(port)
  _EMULATOR['process'] = server
  saved = {k: os.environ.get(k) for k in env}
  os.environ.update(env)
  storage._filesystem.cache_clear()
  yield env
  for key, value in saved.items():
    if value is None:
      os.environ.pop(key, None)
    else:
      os.environ[key] = value
  storage._filesystem.cache_clear()
  server.kill()
  server.wait()
  log.close()


def _url(path: str) -> str:
  return f'gs://{BUCKET}/{path}'


def _run_env(gcs, tmp_path):
  # Each run its own feature cache: the mirror itself is under test.
  return dict(os.environ, **gcs, JAX_PLATFORMS='cpu', XDG_CACHE_HOME=str(tmp_path / 'cache'))


def _main(args, env, **kwargs):
  return main_process(args, env=env, **kwargs)


def _flags(workdir, **overrides):
  overrides = {
    'data.train_dir': _url('features/train'),
    'data.test_dir': _url('features/test'),
    **overrides,
  }
  return ['--config=configs/vqvc_plus.py:tiny', f'--workdir={workdir}'] + [
    f'--config.{k}={v}' for k, v in overrides.items()
  ]


def _params(workdir):
  return jax.tree.leaves(nnx.to_pure_dict(nnx.state(checkpoints.load(str(workdir)), nnx.Param)))


def _losses(workdir, first=1):
  """The train losses of steps first..STEPS that the run's last command logged."""
  summary = json.loads(storage.read_bytes(storage.join(str(workdir), 'train_summary.json')))
  return np.array([summary['train_losses'][str(s)] for s in range(first, STEPS + 1)])


@pytest.fixture(scope='module')
def bucket_features(gcs, small_corpus):
  """small_corpus preprocessed straight into the bucket (esf2 and esm1 the test speakers)."""
  preprocessing.preprocess(
    str(small_corpus),
    _url('features'),
    test_speakers=['esf2', 'esm1'],
    workers=2,
    progress=False,
    log=lambda _: None,
  )
  return _url('features')


@pytest.fixture(scope='module')
def straight(bucket_features, small_features, tmp_path_factory):
  """An uninterrupted run of STEPS steps, from the bucket's features into the bucket."""
  workdir = _url('straight')
  config = tiny_config(
    small_features,
    num_train_steps=STEPS,
    **{'data.train_dir': _url('features/train'), 'data.test_dir': _url('features/test')},
  )
  os.environ['XDG_CACHE_HOME'] = str(tmp_path_factory.mktemp('cache'))
  try:
    loop.train_and_evaluate(config, workdir)
  finally:
    os.environ.pop('XDG_CACHE_HOME')
  return workdir


def test_preprocessing_writes_its_whole_output_into_the_bucket(bucket_features, small_features):
  names = {storage.relpath(p, bucket_features) for p in storage.find(bucket_features)}
  local = {str(p.relative_to(small_features)) for p in small_features.rglob('*') if p.is_file()}
  # The same files, and nothing half-written (.tmp) or left over (its stamp, its lock: released, the
  # lock object is deleted; a local lock file stays, empty, as a workdir's does).
  assert names == local - {'.lock', '.lock.owner'} and '.lock' not in names
  for name in ('train/awb_001.npy', 'test/esf2_001.npy'):
    np.testing.assert_array_equal(
      np.load(io.BytesIO(storage.read_bytes(storage.join(bucket_features, name)))),
      np.load(small_features / name),
    )
  with np.load(io.BytesIO(storage.read_bytes(storage.join(bucket_features, 'stats.npz')))) as s:
    with np.load(small_features / 'stats.npz') as expected:
      np.testing.assert_allclose(s['mean'], expected['mean'], rtol=1e-6)
  manifest = json.loads(storage.read_bytes(storage.join(bucket_features, 'manifest.json')))
  assert manifest['complete'] and manifest['totals']['test']['speakers'] == 2


def test_a_run_in_the_bucket_writes_everything_there_and_matches_a_local_run(
  straight, small_features, tmp_path
):
  names = {storage.relpath(p, straight) for p in storage.find(straight)}
  for name in ('config.json', 'model.json', 'train_summary.json', f'checkpoints/{STEPS}/state'):
    assert any(n == name or n.startswith(name + '/') for n in names), name
  assert '.lock' not in names  # released at the end
  events = [n for n in names if n.startswith('tensorboard/events.out.tfevents.')]
  assert len(events) == 1
  from tensorboardX.proto import event_pb2

  data, tags = storage.read_bytes(storage.join(straight, events[0])), set()
  while data:
    (length,) = np.frombuffer(data[:8], '<u8')
    event = event_pb2.Event.FromString(data[12 : 12 + int(length)])
    tags |= {v.tag for v in event.summary.value}
    data = data[16 + int(length) :]
  assert {'train/loss', 'test/loss'} <= tags and any(t.startswith('mel/') for t in tags), tags
  config = json.loads(storage.read_bytes(storage.join(straight, 'config.json')))
  assert config['data']['train_dir'] == _url('features/train')

  local = tmp_path / 'local'
  loop.train_and_evaluate(tiny_config(small_features, num_train_steps=STEPS), str(local))
  np.testing.assert_allclose(_losses(straight), _losses(local), atol=1e-6, rtol=0)
  for a, b in zip(_params(straight), _params(local)):
    np.testing.assert_allclose(a, b, atol=1e-6)


def _event_tags_by_step(data: bytes) -> list[tuple[int, str]]:
  from tensorboardX.proto import event_pb2

  tags = []
  while data:
    (length,) = np.frombuffer(data[:8], '<u8')
    event = event_pb2.Event.FromString(data[12 : 12 + int(length)])
    tags += [(event.step, v.tag) for v in event.summary.value]
    data = data[16 + int(length) :]
  return tags


def test_an_event_file_in_the_bucket_goes_on_in_parts_that_upload_linear_bytes(gcs):
  """Object storage cannot append: each flush uploads the whole event file, so a long run uploaded
  the square of its events. In parts of about 64 KiB, 40 evaluations of a 40 KiB sample upload each
  byte once or twice, and TensorBoard's reading of the parts in order sees every event once."""
  wave = np.random.default_rng(0).uniform(-0.5, 0.5, 20_000).astype(np.float32)  # 40 KiB as WAV
  uploaded = {}
  for name, part_bytes in (('one_file', 0), ('parts', 64 << 10)):
    writer = summaries.Writer(_url(f'events/{name}'), part_bytes=part_bytes)
    before = gcs_emulator.uploaded_bytes(_EMULATOR['uploads'], f'events/{name}/')
    for step in range(40):
      writer.scalars(step, {'loss': 1.0 / (step + 1)}, 'train/')
      writer.audio(step, 'audio/conversion', wave * (step % 2), 22050)
      writer.flush()
    writer.close()
    uploaded[name] = gcs_emulator.uploaded_bytes(_EMULATOR['uploads'], f'events/{name}/') - before
    files = sorted(storage.find(_url(f'events/{name}/tensorboard')))
    tags = [t for f in files for t in _event_tags_by_step(storage.read_bytes(f))]
    assert [s for s, tag in tags if tag == 'train/loss'] == list(range(40)), name
    assert [s for s, tag in tags if tag == 'audio/conversion'] == list(range(40)), name
    if part_bytes:  # cut at the first flush past the size (when tensorboardX's queue has emptied)
      assert len(files) > 5 and files[1].endswith('.part0001'), files
  stored = sum(len(storage.read_bytes(f)) for f in storage.find(_url('events/parts/tensorboard')))
  assert uploaded['parts'] < 2 * stored  # each byte once, a part's last bytes more
  # 40 flushes of a growing file: about 16x in theory; a busy machine's flushes may coalesce a few.
  assert uploaded['one_file'] > 5 * uploaded['parts'], uploaded


def test_sigkill_in_the_middle_of_a_checkpoint_in_the_bucket_resumes_exactly(
  gcs, straight, tmp_path
):
  workdir = _url('killed')
  env = _run_env(gcs, tmp_path)
  flags = _flags(workdir, num_train_steps=STEPS, checkpoint_every_steps=1)
  run = _main(flags, env)
  # The emulator holds an upload of checkpoint 3 for 5 s: it cannot complete before the kill, which
  # comes as soon as one of its objects lands.
  deadline = time.monotonic() + 300
  while not storage.find(storage.join(workdir, 'checkpoints/3')):
    assert run.poll() is None, run.stdout.read()[-3000:]
    assert time.monotonic() < deadline, 'checkpoint 3 never started'
    time.sleep(0.05)
  run.send_signal(signal.SIGKILL)
  run.wait()
  time.sleep(HOLD_SECONDS)  # the held upload lands (a dead writer's last request), then the rerun
  written = storage.find(storage.join(workdir, 'checkpoints/3'))
  assert written and not any(p.endswith('3/commit_success.txt') for p in written), written

  rerun = _main(flags, env)
  out = rerun.communicate(timeout=600)[0]
  assert rerun.returncode == 0, out[-3000:]
  assert 'resumed from step 2' in out, out[-3000:]
  np.testing.assert_allclose(_losses(workdir, 3), _losses(straight, 3), atol=1e-6, rtol=0)
  for a, b in zip(_params(workdir), _params(straight)):
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_conversion_and_evaluation_of_a_workdir_in_the_bucket(
  gcs, straight, small_corpus, tmp_path
):
  env = _run_env(gcs, tmp_path)
  output = _url('converted/awb_as_slt.wav')
  convert = _main(
    [
      '--mode=convert',
      f'--workdir={straight}',
      f'--source={small_corpus / "awb" / "awb_001.ogg"}',
      f'--target={small_corpus / "slt" / "slt_001.ogg"}',
      f'--output={output}',
    ],
    env,
  )
  out = convert.communicate(timeout=600)[0]
  assert convert.returncode == 0, out[-3000:]
  wave, rate = sf.read(io.BytesIO(storage.read_bytes(output)))
  source, _ = sf.read(small_corpus / 'awb' / 'awb_001.ogg')
  assert rate == 22050 and 0.5 < len(wave) / len(source) < 1.5

  from skipvqvc_jax.evaluation import evaluate

  metrics = evaluate.run(straight, num_pairs=2, report_pairs=1, num_vocoder_utterances=1)
  report = storage.join(straight, f'eval/step_{STEPS}')
  assert json.loads(storage.read_bytes(storage.join(report, 'metrics.json'))) == json.loads(
    json.dumps(metrics)
  )
  page = storage.read_bytes(storage.join(report, 'report.html')).decode()
  for asset in [a.split('"')[0] for a in page.split('src="')[1:]]:
    assert storage.isfile(storage.join(report, asset)), asset
  assert (
    f'step_{STEPS}/report.html'
    in storage.read_bytes(storage.join(straight, 'eval/index.html')).decode()
  )


def test_the_lock_in_the_bucket(gcs, small_features, tmp_path):
  workdir = _url('locked')
  lock = storage.join(workdir, '.lock')
  # A live run elsewhere: refused in one line naming it, and nothing of the workdir written.
  storage.create_only(
    lock, json.dumps(dict(owner='pid 1 on tpu-vm-7', host='tpu-vm-7', renewed=time.time())).encode()
  )
  env = _run_env(gcs, tmp_path)
  refused = _main(_flags(workdir, num_train_steps=2), env)
  out = refused.communicate(timeout=600)[0]
  assert refused.returncode == 1, out[-3000:]
  errors = [line for line in out.splitlines() if line.startswith('error:')]
  assert len(errors) == 1 and 'in use by another run (pid 1 on tpu-vm-7)' in errors[0], out[-2000:]
  assert storage.find(workdir) == [lock]

  # Its VM died 20 minutes ago: taken over, saying so.
  storage.remove(lock)
  storage.create_only(
    lock,
    json.dumps(
      dict(owner='pid 1 on tpu-vm-7', host='tpu-vm-7', renewed=time.time() - 1200)
    ).encode(),
  )
  taken = locks.ObjectLock(workdir)
  taken.acquire()
  assert json.loads(storage.read_bytes(lock))['pid'] == os.getpid()
  with pytest.raises(TrainingError, match='in use by another run'):
    locks.ObjectLock(workdir).acquire()
  taken.release()
  assert not storage.exists(lock)

  # Ten runs starting at once: exactly one holds it (the generation precondition decides).
  contenders = [locks.ObjectLock(workdir) for _ in range(10)]
  outcomes = [None] * 10

  def start(i):
    try:
      contenders[i].acquire()
      outcomes[i] = 'held'
    except TrainingError:
      outcomes[i] = 'refused'

  threads = [threading.Thread(target=start, args=(i,)) for i in range(10)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert outcomes.count('held') == 1, outcomes
  contenders[outcomes.index('held')].release()


def _readme_pod_recipe() -> dict[str, str]:
  """The pod recipe of docs/install.md: {'install': ..., 'preprocess': ..., 'train': ...} lines."""
  readme = (REPO / 'docs' / 'install.md').read_text()
  block = readme.split('### A TPU pod slice, training into a bucket', 1)[1].split('```bash\n', 1)[1]
  lines = [line for line in block.split('```', 1)[0].splitlines() if not line.startswith('#')]
  return dict(
    install=next(line for line in lines if 'pip install' in line),
    preprocess=next(line for line in lines if line.startswith('python preprocess.py')),
    train=next(line for line in lines if 'main.py' in line),
  )


def test_the_readme_pod_recipe(gcs, small_corpus, tmp_path):
  """Steps 2 and 3 of the pod recipe (docs/install.md) as a user types them, against the emulator: the
  preprocessing line with our small corpus for VCTK, the training line run by two processes of two
  simulated devices each (the preset swapped for `tiny` and the steps cut, for CPU time)."""
  recipe = _readme_pod_recipe()
  extras = set(recipe['install'].split('[', 1)[1].split(']', 1)[0].split(','))
  import tomllib

  declared = tomllib.loads((REPO / 'pyproject.toml').read_text())['project'][
    'optional-dependencies'
  ]
  assert extras <= set(declared), extras - set(declared)

  env = dict(_run_env(gcs, tmp_path), BUCKET=BUCKET)
  preprocess = shlex.split(recipe['preprocess'].replace('$BUCKET', BUCKET))
  assert preprocess[:2] == ['python', 'preprocess.py'] and preprocess[2] == 'VCTK-Corpus'
  result = run_in_repo(
    [sys.executable, 'preprocess.py', str(small_corpus), *preprocess[3:]],
    env=env,
    timeout=600,
  )
  assert result.returncode == 0, result.stderr[-3000:]

  command = recipe['train'].split("--command='", 1)[1].rsplit("'", 1)[0]
  words = shlex.split(command.replace('$BUCKET', BUCKET))
  assert words[:3] == ['cd', 'skipvqvc_jax', '&&'] and words[3:5] == ['python', 'main.py'], words
  flags = [w for w in words[5:] if w != '--config.distributed=True']
  assert len(flags) == len(words) - 6, 'the recipe runs on every worker with --config.distributed'
  flags = [
    '--config=configs/vqvc_plus.py:tiny' if f.startswith('--config=') else f for f in flags
  ] + ['--config.num_train_steps=2']
  workdir = next(f.split('=', 1)[1] for f in flags if f.startswith('--workdir='))
  port = _free_port()
  runs = [
    _main(
      [
        *flags,
        f'--coordinator_address=localhost:{port}',
        '--num_processes=2',
        f'--process_id={p}',
      ],
      devices_env(2, env),
    )
    for p in range(2)
  ]
  outs = [r.communicate(timeout=600)[0] for r in runs]
  for r, out in zip(runs, outs):
    assert r.returncode == 0, out[-3000:]
  config = json.loads(storage.read_bytes(storage.join(workdir, 'config.json')))
  assert config['batch_size'] == 2 * 4  # per_device_batch_size x 4 devices
  assert config['data']['test_dir'].endswith('/features/vctk/test')  # the default split's sibling
  assert checkpoints.latest_step(workdir) == 2


def test_f0_made_into_the_bucket_comes_with_the_mirrored_features(gcs, small_corpus, tmp_path):
  """preprocess.py --f0 into a bucket: the F0 files land beside the features there, and training's
  local mirror of the features brings their F0 along (the F0 model's batches need it)."""
  out = _url('pitch_features')
  quiet_preprocess(
    small_corpus,
    out,
    test_speakers=['esf2', 'esm1'],
    f0_params=f0.F0Params('dio'),
  )
  assert storage.isfile(storage.join(out, 'f0', 'train', 'awb_001.npy'))
  os.environ['XDG_CACHE_HOME'] = str(tmp_path / 'cache')
  try:
    batch = input_pipeline.make_dataset(
      storage.join(out, 'train'), batch_size=4, crop_frames=32, f0=True
    )[0]
  finally:
    os.environ.pop('XDG_CACHE_HOME')
  assert batch['f0'].shape == (4, 32) and (batch['f0'] > 0).any()


def test_preprocessing_into_the_bucket_reruns_and_resumes(gcs, bucket_features, small_corpus):
  """A rerun over the bucket's features reads only their headers and redoes nothing; an interrupted
  run (a feature never written, no manifest yet) finishes with only what is missing (numpy >= 2.4
  has no private header reader: every such rerun died with an AttributeError)."""
  fs, root = storage.filesystem(bucket_features)
  generations = lambda: {
    p: fs.info(p)['generation'] for p in fs.find(root) if p.endswith('.npy') and '/f0/' not in p
  }
  before = generations()
  rerun = lambda: preprocessing.preprocess(
    str(small_corpus), bucket_features, workers=1, progress=False, log=lambda _: None
  )
  manifest = rerun()
  assert generations() == before  # nothing rewritten
  missing = f'{root}/train/awb_002.npy'
  fs.rm(missing)
  fs.rm(f'{root}/manifest.json')
  resumed = rerun()
  after = generations()
  assert missing in after and after[missing] != before[missing]
  assert {p: g for p, g in after.items() if p != missing} == {
    p: g for p, g in before.items() if p != missing
  }
  listed = lambda m: [(i['file'], i['frames']) for i in m['items']]
  assert listed(resumed) == listed(manifest)


def test_a_run_on_audio_into_the_bucket_resumes_after_a_preemption(gcs, small_corpus, tmp_path):
  """data.train_dir is audio, the workdir a bucket: the run preprocesses into the workdir, and its
  rerun after a stop (a preemption) finds the features there and resumes."""
  workdir = _url('on_audio')
  env = _run_env(gcs, tmp_path)
  flags = _flags(workdir, **{'data.train_dir': small_corpus, 'data.test_dir': ''})
  for steps, said in ((2, 'preprocess'), (4, 'resumed from step 2')):
    run = _main([*flags, f'--config.num_train_steps={steps}'], env)
    out = run.communicate(timeout=600)[0]
    assert run.returncode == 0, out[-3000:]
    assert said in out, out[-3000:]
  assert checkpoints.latest_step(workdir) == 4


def _one_error(out: str) -> str:
  errors = [line for line in out.splitlines() if line.startswith('error:')]
  assert len(errors) == 1 and 'Traceback' not in out, out[-3000:]
  return errors[0]


def test_storage_that_cannot_be_used_is_one_line_at_the_start(gcs, small_features, tmp_path):
  """A bucket that does not exist, credentials that are missing, and a checkpoint writer
  (tensorstore) that cannot reach a bucket gcsfs reaches: one line each, before any step (the last
  trained, then hung at its first checkpoint, deaf to SIGTERM and Ctrl-C)."""
  env = dict(_run_env(gcs, tmp_path), NO_GCE_CHECK='True')
  cases = [
    (_flags('gs://no-such-bucket/run'), {}, 'bucket gs://no-such-bucket does not exist'),
    (
      _flags(_url('no_credentials')),
      {'GOOGLE_APPLICATION_CREDENTIALS': str(tmp_path / 'key.json')},
      f'GOOGLE_APPLICATION_CREDENTIALS names {tmp_path / "key.json"}, which does not exist',
    ),
    (
      _flags(_url('writer_unreachable'), storage_timeout_seconds=10),
      {'TENSORSTORE_GCS_HTTP_URL': f'http://127.0.0.1:{_free_port()}'},
      'a test write to gs://skipvqvc-test/writer_unreachable/checkpoints: no answer in 10 s',
    ),
  ]
  for flags, changed, expected in cases:
    run = _main(
      [*flags, f'--config.data.train_dir={small_features / "train"}', '--config.data.test_dir='],
      dict(env, **changed),
    )
    out = run.communicate(timeout=300)[0]
    assert run.returncode == 1, out[-3000:]
    assert expected in _one_error(out), out[-3000:]
    assert 'step 1/' not in out


@pytest.mark.parametrize('signum', [signal.SIGTERM, signal.SIGINT], ids=['SIGTERM', 'Ctrl-C'])
def test_a_second_signal_ends_a_run_waiting_on_storage_that_stopped_answering(
  gcs, small_features, tmp_path, signum
):
  """The storage server stops answering (SIGSTOP) while checkpoints are being written: the first
  SIGTERM or Ctrl-C asks for a save that cannot finish; the second ends the process at once with one
  line (exit 143 or 130). Today's code hung there for ever."""
  workdir = _url(f'deaf_{signum.name}')
  flags = _flags(
    workdir,
    num_train_steps=100000,
    checkpoint_every_steps=2,
    **{'data.train_dir': small_features / 'train', 'data.test_dir': small_features / 'test'},
  )
  run = _main(flags, _run_env(gcs, tmp_path))
  emulator = _EMULATOR['process']
  try:
    _wait_for_checkpoint(run, workdir, 2)
    emulator.send_signal(signal.SIGSTOP)
    time.sleep(3)
    run.send_signal(signum)
    time.sleep(3)
    assert run.poll() is None, 'the first signal only asks for a save'
    run.send_signal(signum)
    out = run.communicate(timeout=60)[0]
  finally:
    emulator.send_signal(signal.SIGCONT)
    if run.poll() is None:
      run.kill()
  assert run.returncode == 128 + signum, out[-3000:]
  assert 'again: stopped at once, without saving; the same command continues from checkpoint' in (
    _one_error(out)
  )  # the last it knows complete, or the one it was writing 'if it was written whole'


def _wait_for_checkpoint(run, workdir: str, step: int) -> None:
  done = storage.join(workdir, 'checkpoints', str(step), 'commit_success.txt')
  deadline = time.monotonic() + 300
  while not storage.exists(done):
    assert run.poll() is None, run.stdout.read()[-3000:]
    assert time.monotonic() < deadline, f'checkpoint {step} never completed'
    time.sleep(0.2)


def test_an_outage_mid_checkpoint_is_one_line_and_the_same_command_resumes(
  gcs, small_features, tmp_path
):
  """The server stops answering mid-run: after storage_timeout_seconds one line names the checkpoint
  awaited and where a rerun continues, exit 1; once the server answers again the same command
  resumes from that checkpoint and finishes."""
  workdir = _url('outage')
  data = {'data.train_dir': small_features / 'train', 'data.test_dir': small_features / 'test'}
  flags = _flags(workdir, checkpoint_every_steps=2, storage_timeout_seconds=12, **data)
  env = _run_env(gcs, tmp_path)
  run = _main([*flags, '--config.num_train_steps=100000'], env)
  emulator = _EMULATOR['process']
  try:
    _wait_for_checkpoint(run, workdir, 2)
    emulator.send_signal(signal.SIGSTOP)
    out = run.communicate(timeout=120)[0]
  finally:
    emulator.send_signal(signal.SIGCONT)
    if run.poll() is None:
      run.kill()
  time.sleep(5)  # what the dead run had sent lands (its last requests), then the rerun
  assert run.returncode == 1, out[-3000:]
  line = _one_error(out)
  # What waited is a checkpoint, or the TensorBoard upload of an evaluation, whichever the outage met.
  assert 'no answer in 12 s' in line and 'rerun the same command: it continues from' in line, line
  assert 'still waiting for' in out
  kept = checkpoints.latest_step(workdir)
  assert kept >= 2
  rerun = _main([*flags, f'--config.num_train_steps={kept + 2}'], env)
  out = rerun.communicate(timeout=600)[0]
  assert rerun.returncode == 0, out[-3000:]
  assert 'resumed from step' in out, out[-3000:]


def test_the_storage_server_killed_mid_preprocessing_is_one_line(small_corpus, tmp_path):
  """The storage server dies while preprocessing uploads features: once gcsfs's retries are spent,
  one `error:` line naming the file and exit 1 (it was 23 retry tracebacks, ~500 lines, then a
  minute's retries for each file not yet made)."""
  port = _free_port()
  server = gcs_emulator.start(port, BUCKET)
  try:
    env = dict(os.environ, **emulator_env(port), JAX_PLATFORMS='cpu')
    run = subprocess.Popen(
      [sys.executable, 'preprocess.py', str(small_corpus), _url('dying'), '--workers=1'],
      cwd=REPO,
      env=env,
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
    )
    objects = f'http://127.0.0.1:{port}/storage/v1/b/{BUCKET}/o?prefix=dying/train/'
    deadline = time.monotonic() + 120
    while b'.npy' not in urllib.request.urlopen(objects, timeout=5).read():
      assert run.poll() is None and time.monotonic() < deadline, run.stdout.read()[-3000:]
      time.sleep(0.2)
    server.kill()
    out = run.communicate(timeout=400)[0]
  finally:
    server.kill()
    server.wait()
  assert run.returncode == 1, out[-3000:]
  line = _one_error(out)
  assert line.startswith(f'error: cannot write {_url("dying")}/') and 'Connect call failed' in line
  assert line.endswith('the same command continues (what was made is kept)'), line
