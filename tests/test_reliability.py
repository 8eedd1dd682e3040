"""The faults a lab hits, each reproduced on real files and processes (RELIABILITY.md lists them)."""

import csv
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from skipvqvc_jax.core import errors, fileio
from skipvqvc_jax.inference import conversion_jobs, convert
from skipvqvc_jax.store import checkpoints
from skipvqvc_jax.training import loop
from tests.conftest import (
  REPO,
  main_flags,
  main_process,
  quiet_preprocess,
  run_in_repo,
  small_file_system,
  tiny_config,
)

DEMO = REPO / 'data' / 'demo_corpus'


@pytest.fixture(scope='module')
def run8(small_features, tmp_path_factory):
  """8 tiny steps, checkpoints at 4 and 8."""
  workdir = tmp_path_factory.mktemp('run8')
  summary = loop.train_and_evaluate(tiny_config(small_features), str(workdir))
  return workdir, summary


def _copy(workdir, tmp_path, name='copy') -> pathlib.Path:
  target = tmp_path / name
  shutil.copytree(workdir, target, ignore=shutil.ignore_patterns('tensorboard', 'eval', '.lock*'))
  return target


def _main(*args, **kwargs):
  return main_process(args, **kwargs)


def _wait_for(proc, text, seconds=300):
  """Output lines up to the first containing `text` (or the end)."""
  lines, deadline = [], time.time() + seconds
  for line in proc.stdout:
    lines.append(line)
    if text in line or time.time() > deadline:
      break
  return ''.join(lines)


def _one_error(output: str) -> str:
  errors_ = [line for line in output.splitlines() if line.startswith('error: ')]
  assert len(errors_) == 1 and 'Traceback' not in output, output[-3000:]
  return errors_[0]


@pytest.mark.parametrize(
  'override, field',
  [
    ({'keep_checkpoints': 0}, 'keep_checkpoints'),
    ({'batch_size': 0}, 'batch_size'),
    ({'checkpoint_every_steps': 0}, 'checkpoint_every_steps'),
    ({'log_every_steps': -1}, 'log_every_steps'),
    ({'model.channel': 0}, 'model.channel'),
    ({'data.crop_frames': 36}, 'data.crop_frames'),
    # Each in RANGES (config_ranges.py); grad_clip_norm=-1 once trained on, its loss climbing.
    ({'grad_clip_norm': -1.0}, 'grad_clip_norm'),
    ({'learning_rate': float('nan')}, 'learning_rate'),
    ({'adam_b2': 1.0}, 'adam_b2'),
    ({'seed': -1}, 'seed'),
    ({'latent_loss_weight': -0.1}, 'latent_loss_weight'),
    ({'features.hop_length': 0}, 'features.hop_length'),
    ({'compute_dtype': 'float8'}, 'compute_dtype'),
    ({'lr_schedule': 'cosine'}, 'lr_schedule'),
    ({'pause_fraction': 1.0}, 'pause_fraction'),
    ({'codebook.restart_below': -0.5}, 'codebook.restart_below'),
  ],
)
def test_impossible_settings_are_refused_before_anything_changes(
  run8, tmp_path, small_features, override, field
):
  workdir = _copy(run8[0], tmp_path)
  before = sorted(os.listdir(workdir / 'checkpoints'))
  with pytest.raises(errors.ConfigError, match=rf'--config\.{field}='):
    loop.train_and_evaluate(
      tiny_config(small_features, num_train_steps=12, **override), str(workdir)
    )
  assert sorted(os.listdir(workdir / 'checkpoints')) == before == ['4', '8']


def test_simple_mistakes_are_one_line_errors(small_features, tmp_path):
  a_file = tmp_path / 'a_file'
  a_file.write_text('x')
  cases = [
    (['--config=configs/vqvc_plus.py:no_such'], "unknown preset 'no_such'; valid presets: "),
    (
      ['--config=configs/vqvc_plus.py:tiny', '--config.num_train_step=5'],
      'the config has no field num_train_step; did you mean num_train_steps?',
    ),
    (main_flags(small_features, a_file), f'--workdir {a_file} is a file'),
    (main_flags(small_features, tmp_path / 'w', batch_size=-2), '--config.batch_size=-2'),
    (
      main_flags(small_features, tmp_path / 'w', grad_clip_norm=-1),
      '--config.grad_clip_norm=-1.0: must be a number > 0',
    ),
  ]
  for args, message in cases:
    proc = _main(*args)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 1, out[-3000:]
    assert message in _one_error(out), (message, out[-2000:])
  assert not (tmp_path / 'w').exists()  # refused before anything is written


def test_another_model_in_a_used_workdir_is_refused_and_nothing_is_overwritten(
  run8, tmp_path, small_features
):
  workdir = _copy(run8[0], tmp_path)
  config_json = (workdir / 'config.json').read_bytes()
  with pytest.raises(
    errors.TrainingError,
    match=r"holds a run of .*'channel': 16.*this config "
    r"trains .*'channel': 32",
  ):
    loop.train_and_evaluate(
      tiny_config(small_features, num_train_steps=12, **{'model.channel': 32}), str(workdir)
    )
  assert (workdir / 'config.json').read_bytes() == config_json
  assert convert.Converter.restore(str(workdir)).model.channel == 16
  # resume=False keeps the old run, with the config.json that describes it.
  loop.train_and_evaluate(
    tiny_config(small_features, num_train_steps=1, resume=False, **{'model.channel': 32}),
    str(workdir),
  )
  aside = [d for d in os.listdir(workdir) if d.startswith('checkpoints.old-')]
  assert len(aside) == 1 and (workdir / aside[0] / 'config.json').read_bytes() == config_json
  assert sorted(os.listdir(workdir / aside[0]))[:2] == ['4', '8']
  # Its model.json too: what the set-aside checkpoints restore with.
  assert fileio.load_json(workdir / aside[0] / 'model.json')['model']['channel'] == 16
  assert fileio.load_json(workdir / 'model.json')['model']['channel'] == 32


def test_a_workdir_without_model_json_says_how_to_write_it(run8, tmp_path, small_features):
  """A workdir written before model.json existed: restoring names the fix in one line, and rerunning
  its training (already at its last step) writes model.json without training further."""
  workdir = _copy(run8[0], tmp_path)
  (workdir / 'model.json').unlink()
  with pytest.raises(errors.CheckpointError, match='rerun its training command once'):
    checkpoints.load(str(workdir))
  before = checkpoints.load(str(run8[0]))
  summary = loop.train_and_evaluate(tiny_config(small_features), str(workdir))
  assert summary['start_step'] == summary['step'] == 8
  info = checkpoints.read_model_info(str(workdir))
  assert info.spec == before.spec() and info.state_path == ('params',)
  restored = checkpoints.params_of(checkpoints.load(str(workdir)))
  for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(checkpoints.params_of(before))):
    np.testing.assert_array_equal(a, b)


def test_two_runs_on_one_workdir_and_a_stale_lock(small_features, tmp_path):
  workdir = tmp_path / 'w'
  first = _main(
    *main_flags(
      small_features,
      workdir,
      num_train_steps=100000,
      checkpoint_every_steps=2,
      eval_every_steps=100000,
    )
  )
  try:
    _wait_for(first, 'step 3/')
    second = _main(*main_flags(small_features, workdir, num_train_steps=100000))
    out, _ = second.communicate(timeout=300)
    assert second.returncode == 1
    assert f'is in use by another run (pid {first.pid} on ' in _one_error(out)
  finally:
    first.kill()  # SIGKILL: no chance to clean up
    first.communicate(timeout=60)
  latest = checkpoints.latest_step(str(workdir))
  third = _main(*main_flags(small_features, workdir, num_train_steps=latest + 2))
  out, _ = third.communicate(timeout=300)
  assert third.returncode == 0, out[-3000:]
  assert f'taking over the lock of a run that is gone (pid {first.pid} on' in out
  assert f'resumed from step {latest}' in out
  assert (workdir / '.lock.owner').read_text() == ''  # released


def test_sigterm_during_the_evaluation_of_a_checkpoint_step(small_features, tmp_path):
  """The default periods put evaluation and a checkpoint on the same steps: a SIGTERM that lands in
  the evaluation must still save once, and exit 143 (128 + SIGTERM: the run did not finish)."""
  workdir = tmp_path / 'w'
  proc = _main(
    *main_flags(
      small_features,
      workdir,
      num_train_steps=100000,
      eval_every_steps=2,
      checkpoint_every_steps=2,
      eval_batches=200,
    )
  )
  head = _wait_for(proc, 'step 2/100000')  # logged just before step 2's long evaluation
  proc.send_signal(signal.SIGTERM)
  out, _ = proc.communicate(timeout=300)
  assert proc.returncode == 143, head + out[-3000:]  # 128 + SIGTERM, after the save
  assert 'preempted at step 2' in out and 'already exists' not in out
  with checkpoints.TrainCheckpoints(str(workdir), async_save=False) as saved:
    assert saved.all_steps() == [2]


def test_ctrl_c_saves_and_stops(small_features, tmp_path):
  workdir = tmp_path / 'w'
  proc = _main(
    *main_flags(small_features, workdir, num_train_steps=100000, checkpoint_every_steps=100000)
  )
  _wait_for(proc, 'step 3/100000')
  proc.send_signal(signal.SIGINT)
  out, _ = proc.communicate(timeout=300)
  # 130 (128 + SIGINT) after a clean save, so `train && eval` does not go on as if it had finished.
  assert proc.returncode == 130, out[-3000:]
  assert 'interrupted at step' in out and 'Traceback' not in out
  assert checkpoints.latest_step(str(workdir)) >= 3


def _damage(step_dir: pathlib.Path, how: str):
  state = step_dir / 'state'
  if how == 'truncated array file':
    # Every array data file cut in half, as a write cut short leaves them. (Cutting only the largest
    # was flaky: which arrays share an OCDBT data file depends on the write's timing, and when that
    # file held only optimizer state the parameters still read, correctly, from step 8.)
    for data in (p for p in state.rglob('*') if p.is_file() and p.parent.name == 'd'):
      data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
  else:
    (state / '_METADATA').unlink()


@pytest.mark.parametrize('how', ['truncated array file', 'missing metadata file'])
def test_a_damaged_latest_checkpoint_falls_back_to_the_one_before(
  run8, small_features, tmp_path, how
):
  workdir = _copy(run8[0], tmp_path)
  _damage(workdir / 'checkpoints' / '8', how)
  # Conversion and init_from read the newest intact checkpoint, and leave the workdir as it is.
  at_4 = convert.Converter.restore(str(workdir), step=4)
  mel = np.random.default_rng(0).normal(-4, 1, (80, 64)).astype(np.float32)
  np.testing.assert_array_equal(
    convert.Converter.restore(str(workdir)).reconstruct_mel(mel)[0], at_4.reconstruct_mel(mel)[0]
  )
  assert sorted(os.listdir(workdir / 'checkpoints')) == ['4', '8']
  # Training moves the damaged one aside (nothing is deleted) and redoes steps 5 to 8 exactly.
  summary = loop.train_and_evaluate(tiny_config(small_features), str(workdir))
  assert summary['start_step'] == 4 and summary['step'] == 8
  for step in range(5, 9):
    assert summary['train_losses'][step] == pytest.approx(run8[1]['train_losses'][step], abs=1e-6)
  assert len(os.listdir(workdir / 'checkpoints.damaged')) == 1


def test_conversion_reads_parameters_only(run8, tmp_path):
  """A checkpoint without its data-iterator file (or optimizer state nobody needs) still converts."""
  workdir = _copy(run8[0], tmp_path)
  for step in ('4', '8'):
    shutil.rmtree(workdir / 'checkpoints' / step / 'data')
  out = tmp_path / 'o.wav'
  convert.Converter.restore(str(workdir)).convert_file(
    str(DEMO / 'awb' / 'awb_002.ogg'), [str(DEMO / 'slt' / 'slt_003.ogg')], str(out)
  )
  assert out.stat().st_size > 1000


def test_conversion_never_overwrites_an_input_and_checks_every_job_first(run8, tmp_path):
  converter = convert.Converter.restore(str(run8[0]))
  source = tmp_path / 'a.ogg'
  shutil.copy(DEMO / 'awb' / 'awb_002.ogg', source)
  original = source.read_bytes()
  target = str(DEMO / 'slt' / 'slt_003.ogg')
  with pytest.raises(errors.ConversionError, match='would overwrite an input audio file'):
    converter.convert_file(str(source), [target], str(source))
  assert source.read_bytes() == original
  with pytest.raises(errors.ConversionError, match='is a folder: give a file name'):
    converter.convert_file(str(source), [target], str(tmp_path))
  with pytest.raises(errors.ConversionError, match='would both be written to'):
    converter.convert_many(
      [
        (str(source), [target], str(tmp_path / 'x.wav')),
        (target, [str(source)], str(tmp_path / 'x.wav')),
      ]
    )
  assert not (tmp_path / 'x.wav').exists()
  pairs = tmp_path / 'pairs.csv'
  pairs.write_bytes(
    '\ufeffsource,target,output\n'.encode('utf-8')
    + f'{source},{target},{tmp_path / "p.wav"}\n{source},{target},\n'.encode()
  )
  with pytest.raises(errors.ConversionError, match=r'pairs.csv line 3: the output is empty'):
    conversion_jobs.read_pairs(str(pairs))
  pairs.write_bytes(
    '\ufeffsource,target,output\n'.encode('utf-8')
    + f'{source},{target},{tmp_path / "p.wav"}\n'.encode()
  )
  assert conversion_jobs.read_pairs(str(pairs)) == [
    (str(source), [target], str(tmp_path / 'p.wav'))
  ]


def test_a_folder_with_a_bad_file_and_shared_names_converts_everything_else(run8, tmp_path):
  sources = tmp_path / 'sources'
  sources.mkdir()
  shutil.copy(DEMO / 'awb' / 'awb_002.ogg', sources / 'a.ogg')
  shutil.copy(
    sources / 'a.ogg', sources / 'a.wav'
  )  # same name, other extension (decodes by content)
  (sources / 'bad.wav').write_bytes(b'RIFF....WAVEfmt nonsense')
  shutil.copy(DEMO / 'kal' / 'kal_002.ogg', sources / 'z.ogg')
  proc = _main(
    '--mode=convert',
    f'--workdir={run8[0]}',
    f'--source_dir={sources}',
    f'--target={DEMO / "slt" / "slt_003.ogg"}',
    f'--output_dir={tmp_path / "out"}',
  )
  out, _ = proc.communicate(timeout=300)
  assert proc.returncode == 1
  error = _one_error(out)
  assert '1 of 4 conversions failed (the other 3 are written)' in error and 'bad.wav' in error
  assert sorted(os.listdir(tmp_path / 'out')) == ['a_ogg.wav', 'a_wav.wav', 'index.csv', 'z.wav']
  with open(tmp_path / 'out' / 'index.csv', newline='') as f:  # the batch's index says which failed
    failed = [row['source'] for row in csv.DictReader(f) if row['error']]
  assert [os.path.basename(f) for f in failed] == ['bad.wav']
  assert 'a.ogg -> a_ogg.wav' in out


# ---- preprocessing --------------------------------------------------------------------------------


def _on_disk(out) -> list[str]:
  return sorted(
    os.path.join(side, f)
    for side in ('train', 'test')
    if (out / side).is_dir()
    for f in os.listdir(out / side)
    if f.endswith('.npy')
  )


def _preprocess(*args, env=None):
  return run_in_repo(
    [sys.executable, 'preprocess.py', *map(str, args), '--noprogress'],
    timeout=600,
    env=None if env is None else dict(os.environ, **env),
  )


def test_a_changed_split_moves_features_and_the_manifest_says_what_is_there(small_corpus, tmp_path):
  out = tmp_path / 'out'
  from skipvqvc_jax.data import preprocessing

  quiet = dict(workers=1, progress=False, log=lambda _: None)
  preprocessing.preprocess(str(small_corpus), str(out), test_speakers=['esf2', 'esm1'], **quiet)
  os.remove(out / 'split.json')  # what the error message says to do to change the split
  logs = []
  manifest = preprocessing.preprocess(
    str(small_corpus),
    str(out),
    test_speakers=['awb', 'esm1'],
    workers=1,
    progress=False,
    log=logs.append,
  )
  train_speakers = {corpus_speaker(f) for f in os.listdir(out / 'train')}
  test_speakers = {corpus_speaker(f) for f in os.listdir(out / 'test')}
  assert test_speakers == {'awb', 'esm1'} and not train_speakers & test_speakers
  assert [i['file'] for i in manifest['items']] == _on_disk(out)
  assert any('12 features moved to the other side' in line for line in logs), logs


def corpus_speaker(name):
  return name.split('_', 1)[0]


def test_an_interrupted_run_cannot_continue_with_other_parameters(
  small_corpus, tmp_path, monkeypatch
):
  from skipvqvc_jax.data import audio, preprocessing

  out = tmp_path / 'out'
  done = []
  real = preprocessing._featurise  # pylint: disable=protected-access

  def interrupted(task):
    if len(done) == 3:
      raise KeyboardInterrupt  # Ctrl-C in the middle of the run
    done.append(task)
    return real(task)

  monkeypatch.setattr(preprocessing, '_featurise', interrupted)
  with pytest.raises(KeyboardInterrupt):
    quiet_preprocess(
      small_corpus,
      out,
      audio.FeatureParams(n_mels=40),
    )
  manifest = fileio.load_json(out / 'manifest.json')
  assert manifest['complete'] is False and [i['file'] for i in manifest['items']] == _on_disk(out)
  monkeypatch.setattr(preprocessing, '_featurise', real)
  with pytest.raises(errors.CorpusError, match=r'other parameters \(n_mels: 40 != 80\)'):
    quiet_preprocess(str(small_corpus), str(out))
  with pytest.raises(errors.CorpusError, match='did not finish'):  # training refuses it too
    loop.train_and_evaluate(
      tiny_config(out, **{'features.n_mels': 40, 'data.test_dir': str(out / 'train')}),
      str(tmp_path / 'w'),
    )
  finished = quiet_preprocess(
    small_corpus,
    out,
    audio.FeatureParams(n_mels=40),
  )
  assert finished['complete'] and len(finished['items']) == 24 == len(_on_disk(out))
  assert not (out / preprocessing.STAMP).exists()


def _children(pid: int) -> list[int]:
  with open(f'/proc/{pid}/task/{pid}/children') as f:
    return [int(c) for c in f.read().split()]


def test_a_killed_worker_stops_the_run_instead_of_hanging(tmp_path):
  audio_dir = tmp_path / 'audio'
  for speaker in ('awb', 'slt', 'kal', 'rms'):
    shutil.copytree(DEMO / speaker, audio_dir / speaker)
  proc = subprocess.Popen(
    [
      sys.executable,
      'preprocess.py',
      str(audio_dir),
      str(tmp_path / 'out'),
      '--workers=2',
      '--noprogress',
    ],
    cwd=REPO,
    text=True,
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
  )
  deadline = time.time() + 120
  while time.time() < deadline and not list((tmp_path / 'out').glob('*/*.npy')):
    time.sleep(0.2)
  workers = [
    c
    for c in _children(proc.pid)
    if 'spawn_main' in open(f'/proc/{c}/cmdline').read().replace('\0', ' ')
  ]
  assert workers, 'no worker process found'
  os.kill(workers[0], signal.SIGKILL)  # what the out-of-memory killer does
  out, err = proc.communicate(timeout=120)  # it must end, not wait for the dead worker forever
  assert proc.returncode == 1, err[-2000:]
  assert 'a worker process died' in _one_error(err)
  manifest = fileio.load_json(tmp_path / 'out' / 'manifest.json')
  assert not manifest['complete'] and [i['file'] for i in manifest['items']] == _on_disk(
    tmp_path / 'out'
  )
  again = _preprocess(audio_dir, tmp_path / 'out')
  assert again.returncode == 0, again.stderr[-2000:]
  assert len(_on_disk(tmp_path / 'out')) == 96


def test_broken_links_truncated_features_and_names_that_are_not_utf8(small_corpus, tmp_path):
  audio_dir = tmp_path / 'audio'
  shutil.copytree(small_corpus, audio_dir)
  os.symlink(tmp_path / 'gone.wav', audio_dir / 'awb' / 'awb_099.wav')
  odd = os.fsdecode(b'awb_\xff\xfe.ogg')  # Latin-1 bytes, not UTF-8
  shutil.copy(audio_dir / 'awb' / 'awb_001.ogg', os.path.join(audio_dir, 'awb', odd))
  out = tmp_path / 'out'
  first = _preprocess(
    audio_dir, out, '--test_speakers=esf2,esm1', env={'PYTHONIOENCODING': 'utf-8'}
  )
  assert first.returncode == 0, first.stderr[-2000:]
  assert 'skipped awb/awb_099.wav: a broken link' in first.stdout
  assert os.path.exists(os.path.join(out, 'train', os.fsdecode(b'awb_\xff\xfe.npy')))
  feature = out / 'train' / 'slt_003.npy'
  feature.write_bytes(feature.read_bytes()[:200])  # a truncated feature file
  again = _preprocess(audio_dir, out, env={'PYTHONIOENCODING': 'utf-8'})
  assert again.returncode == 0, again.stderr[-2000:]
  assert np.load(feature).shape[0] == 80  # made again
  assert len(fileio.load_json(out / 'manifest.json')['items']) == 25


@pytest.fixture
def small_disk(tmp_path):
  """A 1 MiB file system of its own, to fill."""
  with small_file_system(tmp_path / 'disk', '1m') as mount:
    yield mount


def test_a_full_disk_in_preprocessing_is_one_line_and_keeps_what_was_made(small_corpus, small_disk):
  result = _preprocess(small_corpus, small_disk / 'out', '--workers=1')
  assert result.returncode == 1
  assert 'No space left on device' in _one_error(result.stderr)
  manifest = fileio.load_json(small_disk / 'out' / 'manifest.json')
  assert not manifest['complete']
  assert [i['file'] for i in manifest['items']] == _on_disk(small_disk / 'out')


def test_a_full_disk_in_training_is_one_line_and_does_not_hang(small_features, small_disk):
  proc = _main(
    *main_flags(small_features, small_disk / 'w', num_train_steps=40, checkpoint_every_steps=2)
  )
  out, _ = proc.communicate(timeout=300)  # it ends
  assert proc.returncode == 1
  assert 'is full' in _one_error(out) and 'free some space and rerun' in _one_error(out)
  assert not [p for p in (small_disk / 'w' / 'checkpoints').iterdir()]  # no half-written checkpoint


def test_an_unreadable_feature_file_is_named(small_features, tmp_path):
  broken = tmp_path / 'features'
  shutil.copytree(small_features, broken)
  bad = broken / 'train' / 'awb_003.npy'
  bad.write_bytes(bad.read_bytes()[:100])
  with pytest.raises(errors.CorpusError, match=rf'{bad}: cannot read it .*preprocess its audio'):
    loop.train_and_evaluate(tiny_config(broken), str(tmp_path / 'w'))


def test_preprocessing_into_a_file_is_one_line(small_corpus, tmp_path):
  a_file = tmp_path / 'a_file'
  a_file.write_text('keep me')
  result = _preprocess(small_corpus, a_file)
  assert result.returncode == 1 and 'is a file, not a folder' in _one_error(result.stderr)
  assert a_file.read_text() == 'keep me'


def test_a_checkpoint_rotated_away_while_read_is_not_damage(run8, tmp_path, monkeypatch, caplog):
  """Conversion while a run trains in the same workdir: the newest checkpoint can vanish between
  listing and reading (keep_checkpoints rotates it out). That is not damage: the one before it is
  read, nothing is called damaged or moved (3 of 8 tries once called healthy checkpoints damaged)."""
  import logging

  workdir = _copy(run8[0], tmp_path)
  real = checkpoints.TrainCheckpoints._stored_state  # pylint: disable=protected-access

  def rotated(self, step, checkpointer):
    if step == 8:  # the trainer deletes it just as it is read
      shutil.rmtree(workdir / 'checkpoints' / '8')
      raise FileNotFoundError(f'{workdir}/checkpoints/8/state/_METADATA')
    return real(self, step, checkpointer)

  monkeypatch.setattr(checkpoints.TrainCheckpoints, '_stored_state', rotated)
  with caplog.at_level(logging.INFO):
    converter = convert.Converter.restore(str(workdir))
  at_4 = convert.Converter.restore(str(workdir), step=4)
  mel = np.random.default_rng(0).normal(-4, 1, (80, 64)).astype(np.float32)
  np.testing.assert_array_equal(converter.reconstruct_mel(mel)[0], at_4.reconstruct_mel(mel)[0])
  assert 'damaged' not in caplog.text and 'removed while read' in caplog.text
  assert not (workdir / 'checkpoints.damaged').exists()


def test_an_error_that_is_not_damage_moves_nothing(run8, small_features, tmp_path, monkeypatch):
  """Restoring failed for an encoding reason (a non-ASCII workdir under a Latin-1 locale): training
  once moved both intact checkpoints to checkpoints.damaged/ and retrained from step 0. Only a failed
  read of a checkpoint's own files is damage; anything else is one line and nothing moves."""
  workdir = _copy(run8[0], tmp_path)

  def encoding_trouble(self, step, checkpointer):
    raise UnicodeEncodeError('latin-1', 'wörk-工作', 5, 7, 'ordinal not in range(256)')

  monkeypatch.setattr(checkpoints.TrainCheckpoints, '_stored_state', encoding_trouble)
  for attempt in (
    lambda: loop.train_and_evaluate(tiny_config(small_features, num_train_steps=12), str(workdir)),
    lambda: convert.Converter.restore(str(workdir)),
  ):
    with pytest.raises(
      errors.UserError, match='UnicodeEncodeError.*that is not damage, so nothing'
    ):
      attempt()
    assert sorted(os.listdir(workdir / 'checkpoints')) == ['4', '8']
    assert not (workdir / 'checkpoints.damaged').exists()


def test_a_refused_rerun_writes_no_config(run8, small_features, tmp_path):
  """config.json and model.json deleted (as an old message advised), then a rerun with another model:
  refused, and it wrote no config.json or model.json of its own, which would then have blocked the
  right model. The right command resumes."""
  workdir = _copy(run8[0], tmp_path)
  (workdir / 'config.json').unlink()
  (workdir / 'model.json').unlink()
  with pytest.raises(errors.UserError, match='does not fit'):
    loop.train_and_evaluate(
      tiny_config(small_features, num_train_steps=12, **{'model.channel': 32}), str(workdir)
    )
  assert not (workdir / 'config.json').exists() and not (workdir / 'model.json').exists()
  summary = loop.train_and_evaluate(tiny_config(small_features, num_train_steps=10), str(workdir))
  assert summary['start_step'] == 8 and summary['step'] == 10
  assert (workdir / 'config.json').exists() and (workdir / 'model.json').exists()


def test_a_workdir_made_read_only_mid_run_is_one_line_and_exit_1(small_features, tmp_path):
  """The workdir becomes read-only while the run trains (a read-only bind mount laid over it): the
  first checkpoint that fails is one `error:` line naming it and the last complete checkpoint, exit
  1 (it was 500 lines of orbax tracebacks, training on, and at times no exit at all)."""
  workdir = tmp_path / 'w'
  workdir.mkdir()
  proc = _main(
    *main_flags(small_features, workdir, num_train_steps=100000, checkpoint_every_steps=4)
  )
  mounted = False
  try:
    deadline = time.monotonic() + 300
    while not (workdir / 'checkpoints' / '4' / 'commit_success.txt').exists():
      assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()[-3000:]
      time.sleep(0.05)
    for options in (['--bind'], ['-o', 'remount,bind,ro']):
      made = subprocess.run(['mount', *options, workdir, workdir], capture_output=True, text=True)
      if made.returncode:
        pytest.skip(f'cannot make a read-only bind mount here: {made.stderr.strip()}')
      mounted = True
    out, _ = proc.communicate(timeout=120)
  finally:
    if proc.poll() is None:
      proc.kill()
    if mounted:
      subprocess.run(['umount', workdir], check=False)
  assert proc.returncode == 1, out[-3000:]
  errors_ = [line for line in out.splitlines() if line.startswith('error:')]
  assert len(errors_) == 1 and 'Traceback' not in out, out[-3000:]
  assert 'Read-only file system' in errors_[0] and 'continue from checkpoint' in errors_[0], errors_


def _logged_steps(event_file: pathlib.Path) -> set[int]:
  from tensorboardX.proto import event_pb2

  data, steps = event_file.read_bytes(), set()
  while data:
    (length,) = np.frombuffer(data[:8], '<u8')
    event = event_pb2.Event.FromString(data[12 : 12 + int(length)])
    if any(v.tag == 'train/loss' for v in event.summary.value):
      steps.add(event.step)
    data = data[16 + int(length) :]
  return steps


def test_tensorboard_removed_mid_run_is_made_again_with_a_warning(small_features, tmp_path):
  """`rm -r tensorboard/` while the run writes it: a new event file holds the later steps, and a
  warning says so (the run went on writing into the deleted file, every later event lost)."""
  workdir = tmp_path / 'w'
  proc = _main(
    *main_flags(small_features, workdir, num_train_steps=100000, checkpoint_every_steps=100000)
  )
  _wait_for(proc, 'step 3/100000')
  shutil.rmtree(workdir / 'tensorboard')
  seen = _wait_for(proc, 'writing a new event file from step')
  _wait_for(proc, 'step 40/100000')
  proc.send_signal(signal.SIGINT)
  out, _ = proc.communicate(timeout=300)
  assert proc.returncode == 130, out[-3000:]
  assert 'was removed while this run wrote it' in seen, seen[-2000:]
  events = list((workdir / 'tensorboard').glob('events.out.tfevents.*'))
  assert len(events) == 1, events
  steps = _logged_steps(events[0])
  assert {20, 30, 40} <= steps and 1 not in steps, sorted(steps)


def test_a_damaged_or_edited_model_json_is_named_and_the_checkpoints_kept(
  run8, small_features, tmp_path
):
  """model.json emptied ({}) or edited (another width) beside intact checkpoints: named as damaged,
  with what to do, not trusted over the checkpoints (the advice was --config.resume=False, which
  would set them aside). Deleting it, as the line says, resumes and writes it anew."""
  import json

  workdir = _copy(run8[0], tmp_path)
  model_json = workdir / 'model.json'
  intact = model_json.read_text()
  edited = json.loads(intact)
  edited['model']['channel'] *= 2
  for text, expected in (
    ('{}', f'{model_json} is damaged (KeyError'),
    (json.dumps(edited), 'was edited or damaged, the checkpoints fit. Delete model.json and rerun'),
  ):
    model_json.write_text(text)
    with pytest.raises(errors.UserError) as raised:
      loop.train_and_evaluate(tiny_config(small_features, num_train_steps=12), str(workdir))
    assert expected in str(raised.value) and '\n' not in str(raised.value), str(raised.value)
    assert sorted(os.listdir(workdir / 'checkpoints')) == ['4', '8']
  model_json.unlink()
  summary = loop.train_and_evaluate(tiny_config(small_features, num_train_steps=12), str(workdir))
  assert summary['start_step'] == 8 and json.loads(model_json.read_text()) == json.loads(intact)
