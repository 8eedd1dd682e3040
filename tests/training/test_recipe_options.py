"""The training-recipe options the original lacks, off in its presets: codebook upkeep
(tasks/codebooks.py: data initialisation and dead-code restarts put codes on the encoder's outputs,
EMA updates make each code the running mean of its outputs, only where asked, and resume exactly)
and the warm-up + cosine learning rate."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from skipvqvc_jax.core.errors import ConfigError
from skipvqvc_jax.training import loop, sharding
from skipvqvc_jax.training.tasks import voice_conversion
from tests.conftest import tiny_config


def _task(small_features, tmp_path, **overrides):
  config = tiny_config(small_features, **overrides)
  return voice_conversion.VoiceConversionTask(config, str(tmp_path), sharding.make_mesh())


def _batch(task):
  return sharding.global_batch(task.mesh, task.inputs(task.dataset()[0], 0))


def _encoder_outputs(task, state, batch, with_codes=False):
  """The quantizer inputs of the step's forward pass (same parameters, same key), and the codes."""
  rng = jax.random.fold_in(jax.random.wrap_key_data(state['rng']), state['step'])
  _, aux = task.steps.loss(state['params'], batch, rng)
  outputs = [np.asarray(x).reshape(-1, x.shape[-1]) for x in aux['quantizer_in']]
  return (outputs, [np.asarray(c).reshape(-1) for c in aux['codes']]) if with_codes else outputs


def _distance_to_nearest(rows, vectors):
  return np.min(np.linalg.norm(rows[:, None, :] - vectors[None, :, :], axis=-1), axis=1)


def _tables(state):
  quantize = state['params']['quantize']
  return [np.asarray(quantize[s]['embedding']) for s in sorted(quantize)]


def test_data_init_starts_every_code_on_an_encoder_output(small_features, tmp_path):
  task = _task(small_features, tmp_path, **{'codebook.data_init': True})
  state = task.initial_state()
  batch = _batch(task)
  outputs = _encoder_outputs(task, jax.tree.map(np.asarray, state), batch)
  before = _tables(state)
  new_state, metrics = task.train_step(state, batch)
  assert int(metrics['restarted_codes']) == sum(task.steps.codebook_sizes)
  for table, old, vectors in zip(_tables(new_state), before, outputs):
    assert np.max(_distance_to_nearest(table, vectors)) < 1e-5
    assert np.min(_distance_to_nearest(old, vectors)) > 1e-2  # N(0, 1) draws were not on them


def test_a_dead_code_restarts_and_live_ones_train_on(small_features, tmp_path):
  task = _task(small_features, tmp_path, **{'codebook.restart_below': 0.5})
  plain = _task(small_features, tmp_path / 'plain')
  state = task.initial_state()
  state['codebook']['usage'][0] = state['codebook']['usage'][0].at[3].set(0.0)  # code 3 of scale 0
  batch = _batch(task)
  outputs = _encoder_outputs(task, jax.tree.map(np.asarray, state), batch)
  plain_state = dict(plain.initial_state(), params=state['params'])
  trained, _ = plain.train_step(jax.tree.map(np.array, plain_state), batch)
  new_state, metrics = task.train_step(state, batch)
  assert int(metrics['restarted_codes']) == 1
  restarted, usual = _tables(new_state)[0], _tables(trained)[0]
  assert _distance_to_nearest(restarted[3:4], outputs[0])[0] < 1e-5
  np.testing.assert_allclose(np.delete(restarted, 3, 0), np.delete(usual, 3, 0), atol=1e-6)
  for table, same in zip(_tables(new_state)[1:], _tables(trained)[1:]):
    np.testing.assert_allclose(table, same, atol=1e-6)
  usage = np.asarray(new_state['codebook']['usage'][0])
  assert usage[3] == pytest.approx(1 / len(usage))


def test_ema_updates_make_each_code_the_mean_of_what_it_was_chosen_for(small_features, tmp_path):
  task = _task(small_features, tmp_path, **{'codebook.ema_decay': 0.5})
  state = task.initial_state()
  batch = _batch(task)
  outputs, codes = _encoder_outputs(task, jax.tree.map(np.asarray, state), batch, with_codes=True)
  before = _tables(state)
  plain = _task(small_features, tmp_path / 'plain')
  plain_state = jax.tree.map(np.array, dict(plain.initial_state(), params=state['params']))
  trained, _ = plain.train_step(plain_state, batch)
  new_state, _ = task.train_step(state, batch)
  unused = 0
  for table, old, vectors, chosen in zip(_tables(new_state), before, outputs, codes):
    unused += len(old) - len(np.unique(chosen))
    for k in range(len(old)):
      frames = vectors[chosen == k]
      # decay 0.5 from a count of 1: the old vector, counted once, averaged with the frames
      expected = (old[k] + frames.sum(axis=0)) / (1 + len(frames))
      np.testing.assert_allclose(table[k], expected, rtol=1e-3, atol=1e-4)
  assert unused > 0  # codes no frame chose were checked too: they keep their vectors
  # A step without EMA moves the codes by Adam instead: the two differ.
  assert np.max(np.abs(_tables(trained)[0] - _tables(new_state)[0])) > 1e-3


def test_upkeep_is_off_in_the_original_presets_and_resumes_exactly(small_features, tmp_path):
  assert 'codebook' not in _task(small_features, tmp_path / 'original').initial_state()
  options = {'codebook.restart_below': 0.9, 'codebook.data_init': True, 'codebook.ema_decay': 0.9}
  straight = loop.train_and_evaluate(
    tiny_config(small_features, num_train_steps=8, **options), str(tmp_path / 'straight')
  )
  halves = tmp_path / 'halves'
  loop.train_and_evaluate(tiny_config(small_features, num_train_steps=4, **options), str(halves))
  second = loop.train_and_evaluate(
    tiny_config(small_features, num_train_steps=8, **options), str(halves)
  )
  assert second['start_step'] == 4
  for step in range(5, 9):
    assert second['train_losses'][step] == pytest.approx(straight['train_losses'][step], abs=1e-6)
  # A resume that would drop the usage state it was trained with is refused in one line.
  with pytest.raises(Exception, match='codebook.restart_below=0.9'):
    loop.train_and_evaluate(tiny_config(small_features, num_train_steps=10), str(halves))


def test_a_codebook_made_from_the_speaker_has_no_table_to_restart(small_features, tmp_path):
  with pytest.raises(ConfigError, match='no fixed table'):
    _task(
      small_features,
      tmp_path,
      **{'codebook.data_init': True},
      **{'model.name': 'vqvc+_multi_codebook_gen', 'trainer': 'simple_normalize_multi'},
    )


def test_warmup_cosine_is_the_rate_adam_applies(small_features):
  config = tiny_config(
    small_features,
    lr_schedule='warmup_cosine',
    warmup_steps=4,
    num_train_steps=12,
    lr_end_fraction=0.1,
    learning_rate=1e-2,
  )
  tx = voice_conversion.make_optimizer(config)
  params = {'w': jnp.zeros(3)}
  opt_state = tx.init(params)
  applied = []
  for _ in range(13):  # a constant gradient: Adam's step is the rate itself
    updates, opt_state = tx.update({'w': jnp.full(3, 0.5)}, opt_state, params)
    applied.append(-float(updates['w'][0]))
  expected = [1e-2 * t / 4 for t in range(4)] + [
    1e-3 + (1e-2 - 1e-3) * 0.5 * (1 + np.cos(np.pi * (t - 4) / 8)) for t in range(4, 13)
  ]
  np.testing.assert_allclose(applied, expected, rtol=1e-4, atol=1e-9)
  # The schedule is every task's: the vocoder's Adam follows it too.
  from skipvqvc_jax.configs import vocoder as vocoder_configs
  from skipvqvc_jax.training.tasks import vocoder

  vocoder_config = vocoder_configs.get_config('tiny')
  for key in ('lr_schedule', 'warmup_steps', 'num_train_steps', 'lr_end_fraction', 'learning_rate'):
    vocoder_config[key] = config[key]
  tx, applied = vocoder.make_optimizer(vocoder_config), []
  opt_state = tx.init(params)
  for _ in range(13):
    updates, opt_state = tx.update({'w': jnp.full(3, 0.5)}, opt_state, params)
    applied.append(-float(updates['w'][0]))
  np.testing.assert_allclose(applied, expected, rtol=1e-4, atol=1e-9)
  constant = voice_conversion.make_optimizer(tiny_config(small_features, learning_rate=1e-2))
  updates, _ = constant.update({'w': jnp.full(3, 0.5)}, constant.init(params), params)
  assert -float(updates['w'][0]) == pytest.approx(1e-2, rel=1e-4)
