"""Training end to end on real features: loss, resume, compilation, checkpoints, failures."""

import importlib
import json
import os
import shutil
import signal
import time

import jax
import ml_collections
import numpy as np
import pytest
from flax import nnx

from skipvqvc_jax import models
from skipvqvc_jax.configs import (
  default,
  vqvc_plus,
  vqvc_plus_multi,
  vqvc_plus_multi_simple,
  vqvc_plus_resample,
  vqvc_plus_rhythm,
)
from skipvqvc_jax.core import errors, fileio
from skipvqvc_jax.store import checkpoints
from skipvqvc_jax.training import cadence as cadence_module
from skipvqvc_jax.training import loop
from skipvqvc_jax.training.tasks import voice_conversion
from tests.conftest import REPO, main_flags, main_process, read_events, tiny_config

# Every preset file of the package but the vocoder's (tests/training/test_vocoder_training.py) and the
# base they share.
CONFIG_FILES = [
  importlib.import_module(f'skipvqvc_jax.configs.{path.stem}')
  for path in sorted((REPO / 'skipvqvc_jax' / 'configs').glob('*.py'))
  if path.stem not in ('__init__', 'default', 'vocoder')
]


def _params(workdir):
  return nnx.to_pure_dict(nnx.state(checkpoints.load(str(workdir)), nnx.Param))


def _max_diff(a, b):
  return max(
    float(np.abs(np.asarray(x) - np.asarray(y)).max())
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
  )


@pytest.mark.parametrize('module', CONFIG_FILES, ids=lambda m: m.__name__.split('.')[-1])
def test_every_preset_loads_and_builds(module):
  for preset in module.PRESETS:
    config = module.get_config(preset)
    # Building only the abstract shapes keeps channel-512 presets cheap.
    abstract = nnx.eval_shape(lambda: voice_conversion.build_model(config))
    assert abstract.name == config.model.name and abstract.channel == config.model.channel
    voice_conversion.check_config(config)  # the model and trainer go together
  with pytest.raises(ValueError, match='valid presets: '):
    module.get_config('no_such_preset')


def test_every_model_has_a_preset():
  trained = {m.get_config(p).model.name for m in CONFIG_FILES for p in m.PRESETS}
  assert trained == set(models.names('voice_conversion'))


def test_original_runs_are_presets():
  assert vqvc_plus.get_config('n64_ch64').model.channel == 64
  assert vqvc_plus.get_config('n64_ch512_simple_normalize').trainer == 'simple_normalize'
  assert vqvc_plus_rhythm.get_config('n128_ch128').trainer == 'rhythm'
  assert vqvc_plus_resample.get_config('n512_ch512').model.n_embed == 512
  # The notebooks' checkpoints: VQVAE.ipynb and inference.ipynb.
  multi, simple = vqvc_plus_multi.get_config('n64_ch512'), vqvc_plus_multi_simple.get_config()
  assert (multi.model.name, multi.model.n_embed, multi.model.channel, multi.trainer) == (
    'vqvc+_multi',
    64,
    512,
    'simple_normalize_multi',
  )
  assert (simple.model.name, simple.model.n_embed, simple.model.channel, simple.trainer) == (
    'vqvc+_multi_simple',
    128,
    512,
    'simple_normalize_multi',
  )
  assert vqvc_plus_multi.get_config('n64_ch64_mean_std').trainer == 'multi'
  base = default.get_config()
  assert (
    base.batch_size,
    base.learning_rate,
    base.grad_clip_norm,
    base.latent_loss_weight,
    base.log_every_steps,
    base.eval_every_steps,
  ) == (8, 1e-3, 3.0, 0.1, 5, 200)


@pytest.fixture(scope='module')
def straight(small_features, tmp_path_factory):
  """8 steps in one go."""
  workdir = tmp_path_factory.mktemp('straight')
  return workdir, loop.train_and_evaluate(tiny_config(small_features), str(workdir))


def test_loss_falls_and_the_step_compiles_once(straight):
  _, summary = straight
  losses = [summary['train_losses'][s] for s in sorted(summary['train_losses'])]
  assert len(losses) == 8
  assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:2])
  assert summary['compiles'] == 1


def test_resume_is_exact(straight, small_features, tmp_path):
  workdir, summary = straight
  halves = tmp_path / 'halves'
  first = loop.train_and_evaluate(tiny_config(small_features, num_train_steps=4), str(halves))
  assert first['step'] == 4
  second = loop.train_and_evaluate(tiny_config(small_features), str(halves))
  assert second['start_step'] == 4 and second['step'] == 8
  # Same batches and noise: the later losses agree, and so do the final parameters.
  for step in range(5, 9):
    assert second['train_losses'][step] == pytest.approx(summary['train_losses'][step], abs=1e-6)
  assert _max_diff(_params(workdir), _params(halves)) <= 1e-6


def test_checkpoint_dir_and_tensorboard_are_written(straight):
  workdir, _ = straight
  assert sorted(os.listdir(workdir / 'checkpoints')) == ['4', '8']
  config = json.load(open(workdir / 'config.json'))
  assert config['model']['channel'] == 16
  assert os.listdir(workdir / 'tensorboard')
  # The settings for TensorBoard's HParams tab and as text, so that runs compare side by side.
  events = read_events(workdir)
  (start,) = events['_hparams_/session_start_info']
  plugin = start[1].metadata.plugin_data
  assert plugin.plugin_name == 'hparams' and b'model.channel' in plugin.content
  assert (
    '_hparams_/experiment' in events
    and b'test/loss' in events['_hparams_/experiment'][0][1].metadata.plugin_data.content
  )
  (text,) = events['config/text_summary']
  assert b'"channel": 16' in text[1].tensor.string_val[0]


def test_fine_tuning_the_decoder_leaves_everything_else_exactly(straight, small_features, tmp_path):
  workdir, _ = straight
  tuned = tmp_path / 'tuned'
  config = tiny_config(small_features, num_train_steps=3, init_from=str(workdir), trainable='dec')
  loop.train_and_evaluate(config, str(tuned))
  before, after = _params(workdir), _params(tuned)
  for group in ('enc', 'quantize'):  # frozen: bit for bit
    for a, b in zip(jax.tree.leaves(before[group]), jax.tree.leaves(after[group])):
      np.testing.assert_array_equal(a, b)
  assert _max_diff(jax.tree.leaves(before['dec']), jax.tree.leaves(after['dec'])) > 0
  with pytest.raises(
    errors.ConfigError, match=r'--config.trainable=decoder: .* its groups are dec'
  ):
    loop.train_and_evaluate(
      tiny_config(small_features, trainable='decoder'), str(tmp_path / 'misspelt')
    )


def test_profile_steps_writes_a_trace_for_tensorboard(small_features, tmp_path):
  workdir = tmp_path / 'profiled'
  summary = loop.train_and_evaluate(
    tiny_config(small_features, num_train_steps=4, profile_steps=2), str(workdir)
  )
  assert summary['step'] == 4
  traces = list((workdir / 'tensorboard' / 'plugins' / 'profile').glob('*/*.xplane.pb'))
  assert len(traces) == 1 and traces[0].stat().st_size > 1000


def test_pauses_are_spaced_to_take_a_share_of_the_time(small_features, tmp_path):
  """pause_fraction > 0: at evaluations, both periods grow by the smallest whole factor that keeps
  the measured pauses (wall time beyond the steps' own) under that share; 0 keeps them as set."""
  flags = dict(eval_every_steps=2, checkpoint_every_steps=2, keep_checkpoints=100)
  steps = 60
  spaced = loop.train_and_evaluate(
    tiny_config(small_features, num_train_steps=steps, pause_fraction=0.1, **flags),
    str(tmp_path / 'spaced'),
  )
  cadence = spaced['cadence']
  decisions = cadence['decisions']
  # A tiny model's step takes milliseconds, an evaluation with Griffin-Lim audio far longer: the
  # second evaluation (step 4; the first starts the measure) already lengthens the periods.
  assert decisions[0]['step'] == 4 and decisions[0]['previous'] == 1
  assert cadence['factor'] == decisions[-1]['factor'] > 1
  assert cadence['eval_every_steps'] == cadence['checkpoint_every_steps'] == 2 * cadence['factor']

  def share(overhead_as_set, step_seconds, factor):
    pause = overhead_as_set / factor
    return pause / (pause + step_seconds)

  aim = 0.1 * cadence_module.MARGIN  # sized with a margin, for the whole run to stay under 0.1
  assert aim < 0.1
  for d in decisions:
    assert d['factor'] > d['previous']  # it only grows
    as_set = d['overhead_seconds_per_step'] * d['previous']
    assert share(as_set, d['step_seconds'], d['factor']) <= aim + 1e-9
    assert share(as_set, d['step_seconds'], d['factor'] - 1) > aim
  # The evaluations and checkpoints fall where the factor in force put them, and at the last step.
  factor, changes, expected = 1, {d['step']: d['factor'] for d in decisions}, {0}
  for step in range(1, steps + 1):
    if step % (2 * factor) == 0 or step == steps:
      expected.add(step)
    factor = changes.get(step, factor)
  assert set(spaced['evals']) == expected
  # The log period grows the same way, from the time a log line takes, only where it must.
  log_changes, period, logged = (
    {d['step']: d['log_every'] for d in cadence['log_decisions']},
    1,
    set(),
  )
  for step in range(1, steps + 1):
    if step % period == 0 or step == steps:
      logged.add(step)
    period = log_changes.get(step, period)
  assert set(spaced['train_losses']) == logged
  assert cadence['log_every_steps'] == period
  for d in cadence['log_decisions']:  # each the smallest period keeping logging under its share
    limit = 0.1 * cadence_module.LOG_SHARE * d['step_seconds']
    assert d['log_seconds'] / d['log_every'] <= limit + 1e-12
    assert d['log_seconds'] / (d['log_every'] - 1) > limit
  saved = sorted(int(d) for d in os.listdir(spaced['checkpoint_dir']) if d.isdigit())
  assert saved == sorted(expected - {0})
  assert 0 < spaced['steps_per_sec_overall'] < spaced['steps_per_sec_between']
  assert spaced['compile_seconds'] == 0.0  # one shape: nothing compiled after the first step

  as_set = loop.train_and_evaluate(
    tiny_config(small_features, num_train_steps=8, pause_fraction=0.0, **flags),
    str(tmp_path / 'as_set'),
  )
  assert set(as_set['evals']) == {0, 2, 4, 6, 8} and as_set['cadence']['factor'] is None


def test_resume_false_moves_old_checkpoints_aside(small_features, tmp_path):
  first = loop.train_and_evaluate(tiny_config(small_features, num_train_steps=4), str(tmp_path))
  again = loop.train_and_evaluate(
    tiny_config(small_features, num_train_steps=4, resume=False), str(tmp_path)
  )
  assert first['step'] == again['step'] == 4 and again['start_step'] == 0
  assert [d for d in os.listdir(tmp_path) if d.startswith('checkpoints.old-')]


def test_init_from_another_run(straight, small_features, tmp_path):
  workdir, _ = straight
  summary = loop.train_and_evaluate(
    tiny_config(small_features, num_train_steps=1, init_from=str(workdir)), str(tmp_path)
  )
  assert summary['start_step'] == 0
  # Initialised from the trained run: its first loss is the trained model's, far below a fresh one.
  fresh = loop.train_and_evaluate(
    tiny_config(small_features, num_train_steps=1), str(tmp_path / 'fresh')
  )
  assert summary['train_losses'][1] < fresh['train_losses'][1]


def test_a_resumed_run_does_not_read_init_from_again(straight, small_features, tmp_path):
  source = tmp_path / 'source'
  shutil.copytree(straight[0], source)
  workdir = str(tmp_path / 'w')
  loop.train_and_evaluate(
    tiny_config(small_features, num_train_steps=2, init_from=str(source)), workdir
  )
  shutil.rmtree(source)  # once a run has its own checkpoint, init_from is neither read nor needed
  summary = loop.train_and_evaluate(
    tiny_config(small_features, num_train_steps=4, init_from=str(source)), workdir
  )
  assert summary['start_step'] == 2 and summary['step'] == 4


@pytest.mark.parametrize('trainer', ['mean_std', 'rhythm'])
def test_other_trainers_train(trainer, small_features, tmp_path):
  overrides = dict(trainer=trainer, num_train_steps=3)
  if trainer == 'rhythm':
    overrides.update({'model.name': 'vqvc+_rhythm', 'data.crop_frames': 64})
  summary = loop.train_and_evaluate(tiny_config(small_features, **overrides), str(tmp_path))
  assert summary['step'] == 3
  assert all(np.isfinite(v) for v in summary['train_losses'].values())
  if trainer == 'mean_std':
    assert (tmp_path / 'stats.npz').exists()  # the workdir carries what conversion needs
  if trainer == 'rhythm':
    assert 1 <= summary['compiles'] <= 3  # one per stretched-length bucket seen
    # Later compilations are timed apart, out of the step rates (no cadence avoids them).
    assert (summary['compile_seconds'] > 0) == (summary['compiles'] > 1)


def test_test_audio_is_preprocessed_into_the_workdir(small_features, small_corpus, tmp_path):
  test_audio = tmp_path / 'test_audio'
  shutil.copytree(small_corpus / 'esm1', test_audio / 'esm1')
  config = tiny_config(small_features, num_train_steps=1, **{'data.test_dir': str(test_audio)})
  summary = loop.train_and_evaluate(config, str(tmp_path / 'w'))
  assert summary['step'] == 1
  assert len(os.listdir(tmp_path / 'w' / 'test_features' / 'train')) == 6


def test_bfloat16_compute_keeps_float32_parameters(small_features, tmp_path):
  config = tiny_config(small_features, num_train_steps=2, compute_dtype='bfloat16')
  summary = loop.train_and_evaluate(config, str(tmp_path))
  assert all(np.isfinite(v) for v in summary['train_losses'].values())
  assert {x.dtype for x in jax.tree.leaves(_params(tmp_path))} == {np.dtype('float32')}


def test_an_unfinished_save_is_never_the_latest(straight):
  workdir, _ = straight
  # What a crash in the middle of saving step 12 leaves behind: orbax's temporary folder.
  partial = workdir / 'checkpoints' / '12.orbax-checkpoint-tmp-1234'
  (partial / 'state').mkdir(parents=True)
  try:
    manager = checkpoints.TrainCheckpoints(str(workdir), keep=3, async_save=False)
    assert manager.latest_step() == 8
    manager.close()
    assert checkpoints.load(str(workdir)).channel == 16
  finally:
    shutil.rmtree(partial)


def test_user_errors_are_one_line(small_features, tmp_path):
  with pytest.raises(errors.CorpusError, match='does not exist'):
    loop.train_and_evaluate(
      tiny_config(small_features, **{'data.train_dir': str(tmp_path / 'x')}), str(tmp_path / 'w1')
    )
  # mean_std without statistics
  bare = tmp_path / 'bare'
  shutil.copytree(small_features / 'train', bare / 'train')
  shutil.copytree(small_features / 'test', bare / 'test')
  with pytest.raises(errors.CorpusError, match='needs per-band statistics: .*stats.npz not found'):
    loop.train_and_evaluate(tiny_config(bare, trainer='mean_std'), str(tmp_path / 'w2'))
  # features made with other parameters than the config's
  with pytest.raises(errors.CorpusError, match=r'hop_length: 256 != 200'):
    loop.train_and_evaluate(
      tiny_config(small_features, **{'features.hop_length': 200}), str(tmp_path / 'w3')
    )


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(small_features, tmp_path):
  poisoned = tmp_path / 'poisoned'
  shutil.copytree(small_features, poisoned)
  config = tiny_config(poisoned, num_train_steps=40, checkpoint_every_steps=2)
  workdir = tmp_path / 'w'
  first = loop.train_and_evaluate(tiny_config(poisoned, num_train_steps=2), str(workdir))
  assert first['step'] == 2
  # Poison every training file after a checkpoint was saved: finite (a non-finite feature is named
  # when the run starts, tests/data/test_bad_data.py), but so large that the next step overflows.
  for f in sorted((poisoned / 'train').glob('*.npy')):
    mel = np.load(f)
    mel[:, :] = 3e38
    fileio.save_npy(str(f), mel)
  with pytest.raises(
    errors.TrainingError,
    match=r'loss became (inf|nan) at step 3: stopping; .* '
    r'last good checkpoint is step 2',
  ):
    loop.train_and_evaluate(config, str(workdir))
  restored = checkpoints.load(str(workdir))  # still readable, and finite
  assert all(
    np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(nnx.state(restored, nnx.Param))
  )


def _main(*args, env=None, **kw):
  return main_process(args, env=env, **kw)


def test_sigterm_saves_a_restorable_checkpoint(small_features, tmp_path):
  workdir = tmp_path / 'w'
  proc = _main(
    *main_flags(
      small_features,
      workdir,
      num_train_steps=100000,
      checkpoint_every_steps=100000,
      log_every_steps=1,
    )
  )
  deadline = time.time() + 240
  lines = []
  for line in proc.stdout:  # wait until training is under way
    lines.append(line)
    if 'step 3/100000' in line or time.time() > deadline:
      break
  proc.send_signal(signal.SIGTERM)
  out, _ = proc.communicate(timeout=240)
  assert proc.returncode == 143, ''.join(lines) + out
  assert 'preemption requested' in out and 'preempted at step' in out
  step = checkpoints.latest_step(str(workdir))
  assert step is not None and step >= 3
  assert checkpoints.load(str(workdir)).channel == 16


def test_main_reports_bad_data_in_one_line(tmp_path):
  proc = _main(
    '--config=configs/vqvc_plus.py:n64_ch64',
    f'--workdir={tmp_path}/w',
    f'--config.data.train_dir={tmp_path}/missing',
  )
  out, _ = proc.communicate(timeout=240)
  assert proc.returncode == 1
  assert f'error: data.train_dir {tmp_path}/missing does not exist' in out
  assert 'Traceback' not in out


def test_the_steps_rate_outlives_a_change_of_the_log_period():
  """A run that ends right after its log period grew still reports the steps' own rate (the one
  measured before the change), not none."""
  config = ml_collections.ConfigDict(
    dict(eval_every_steps=2, checkpoint_every_steps=2, log_every_steps=1, pause_fraction=0.1)
  )
  cadence = cadence_module.Cadence(config)
  cadence.settle(2)  # the first evaluation starts the measure
  for _ in range(3):
    cadence.logged(0.01)  # 10 ms a step
    cadence.log_took(0.05)  # a log line takes five steps' time: the period must grow
  cadence.settle(4)
  assert cadence.log_every > 1 and not cadence.step_times
  assert cadence.steps_per_sec() == pytest.approx(100)
