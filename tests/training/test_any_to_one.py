"""The speaker-free LJ models with train_ljvae.py's BEGAN trainer (`ljvae`) in our loop, and converting
with them: any source comes out in the training speaker's voice, whatever the target."""

import sys

import jax
import numpy as np
import optax
import pytest

import skipvqvc_jax
from skipvqvc_jax.core.errors import ConfigError, ConversionError
from skipvqvc_jax.training import loop, sharding
from skipvqvc_jax.training.tasks import voice_conversion
from tests.conftest import run_in_repo, tiny_config

PRESET = 'vqvc_plus_lj.py:tiny'


@pytest.fixture(scope='module')
def lj_run(small_features, tmp_path_factory):
  workdir = tmp_path_factory.mktemp('lj_run')
  summary = loop.train_and_evaluate(
    tiny_config(small_features, PRESET, num_train_steps=4), str(workdir)
  )
  return workdir, summary


def test_ljvae_trains_the_critic_and_the_decoder(lj_run):
  _, summary = lj_run
  assert summary['step'] == 4 and summary['status'] == 'finished'
  last = summary['last_train']
  for key in ('loss_gan', 'loss_dis', 'k', 'convergence'):
    assert np.isfinite(last[key]), key
  assert 0.0 <= last['k'] <= 1.0


def test_the_adversarial_update_moves_the_decoder_only(small_features, tmp_path):
  config = tiny_config(small_features, PRESET)
  task = voice_conversion.VoiceConversionTask(config, str(tmp_path), sharding.make_mesh())
  state = task.initial_state()
  batch = sharding.global_batch(task.mesh, task.inputs(task.dataset()[0], 0))
  host = jax.tree.map(np.array, state)
  # The autoencoder's update alone, from the same parameters, batch and key.
  rng = jax.random.fold_in(jax.random.wrap_key_data(host['rng']), host['step'])
  (_, aux), grads = jax.value_and_grad(task.steps.loss, has_aux=True)(host['params'], batch, rng)
  renormed = voice_conversion.renormed_params(host['params'], aux)
  updates, _ = task.steps.tx.update(grads, host['opt_state'], renormed)
  alone = optax.apply_updates(renormed, updates)
  new_state, metrics = task.train_step(state, batch)
  new = jax.tree.map(np.asarray, new_state['params'])
  for group in ('enc', 'quantize'):
    leaves = zip(
      jax.tree.leaves(new[group]), jax.tree.leaves(alone[group]), jax.tree.leaves(grads[group])
    )
    for a, b, g in leaves:
      # Adam's first step is +-lr by each gradient's sign: compare where the sign is clear.
      clear = np.abs(np.asarray(g)) > 1e-5
      np.testing.assert_allclose(a[clear], np.asarray(b)[clear], atol=1e-6)
  moved = max(
    float(np.abs(a - b).max())
    for a, b in zip(jax.tree.leaves(new['dec']), jax.tree.leaves(alone['dec']))
  )
  assert moved > 1e-5  # the decoder's own adversarial update
  critic_moved = max(
    float(np.abs(np.asarray(a) - b).max())
    for a, b in zip(
      jax.tree.leaves(new_state['adversary']['critic']),
      jax.tree.leaves(host['adversary']['critic']),
    )
  )
  assert critic_moved > 1e-5
  # k starts at 0 and moves by 0.01 (real - fake), kept in [0, 1].
  assert float(metrics['k']) == pytest.approx(float(new_state['adversary']['k']))
  assert 0.0 <= float(metrics['k']) <= 1.0


def test_the_trainer_and_the_models_go_together(small_features, tmp_path):
  with pytest.raises(ConfigError, match='speaker-free'):
    loop.train_and_evaluate(
      tiny_config(small_features, PRESET, trainer='simple_normalize_multi'), str(tmp_path / 'a')
    )
  with pytest.raises(ConfigError, match='speaker-free'):
    loop.train_and_evaluate(
      tiny_config(small_features, PRESET, **{'model.name': 'vqvc+_multi'}), str(tmp_path / 'b')
    )


def test_time_multi_trains_a_speaker_free_model_without_the_adversary(small_features, tmp_path):
  """train_time_multi.py's row: the multi step (per-band statistics, kept in the workdir) on a
  speaker-free model, no critic; a model with speakers is refused in one line."""
  workdir = tmp_path / 'time_multi'
  config = tiny_config(small_features, 'vqvc_plus_lj.py:time_multi_tiny', num_train_steps=2)
  summary = loop.train_and_evaluate(config, str(workdir))
  assert summary['step'] == 2 and set(summary['train_losses']) == {1, 2}
  assert 'loss_gan' not in summary['last_train'] and (workdir / 'stats.npz').is_file()
  with pytest.raises(ConfigError, match='speaker-free') as refused:
    loop.train_and_evaluate(
      tiny_config(
        small_features, 'vqvc_plus_lj.py:time_multi_tiny', **{'model.name': 'vqvc+_multi'}
      ),
      str(tmp_path / 'refused'),
    )
  assert 'time_multi' not in str(refused.value).split('takes')[-1]


def test_the_notebooks_decoder_fine_tuning_moves_the_decoder_only(lj_run, small_features, tmp_path):
  """LJSpeech.ipynb's fine-tuning (`lj_finetune`, `finetune_dec_*`): a trained LJ model's decoder on a
  new voice, segments stretched by 0.8-1.2 only, L1 + 0.01 x latent, no critic; the rest unchanged."""
  from flax import nnx

  from skipvqvc_jax.store import checkpoints
  from skipvqvc_jax.training import trainers

  mel = np.zeros((2, 80, 128), np.float32)
  lengths = {
    name: {
      trainers.get(name).augment(mel, np.random.default_rng(i))['mel'].shape[-1] for i in range(200)
    }
    for name in ('lj_finetune', 'simple_normalize_multi')
  }
  assert lengths['lj_finetune'] == {96, 128, 160}  # 102-154 frames, rounded to 32
  assert (
    min(lengths['simple_normalize_multi']) <= 64 and max(lengths['simple_normalize_multi']) >= 224
  )
  tuned = tmp_path / 'tuned'
  config = tiny_config(
    small_features, 'vqvc_plus_lj.py:finetune_dec_tiny', num_train_steps=2, init_from=str(lj_run[0])
  )
  summary = loop.train_and_evaluate(config, str(tuned))
  assert 'loss_gan' not in summary['last_train']
  params = lambda w: nnx.to_pure_dict(nnx.state(checkpoints.load(str(w)), nnx.Param))
  before, after = params(lj_run[0]), params(tuned)
  for group in set(before) - {'dec'}:  # frozen: bit for bit
    for a, b in zip(jax.tree.leaves(before[group]), jax.tree.leaves(after[group])):
      np.testing.assert_array_equal(a, b)
  moved = [
    np.abs(a - b).max()
    for a, b in zip(jax.tree.leaves(before['dec']), jax.tree.leaves(after['dec']))
  ]
  assert max(moved) > 0


def test_any_source_comes_out_in_the_training_voice(lj_run, small_corpus):
  converter = skipvqvc_jax.load(str(lj_run[0]))
  source = small_corpus / 'esf2' / 'esf2_001.ogg'
  one = converter.convert(str(source), str(small_corpus / 'awb' / 'awb_001.ogg'))
  other = converter.convert(str(source), str(small_corpus / 'slt' / 'slt_001.ogg'))
  np.testing.assert_array_equal(one, other)  # the target is not used
  assert np.isfinite(one).all() and len(one) > 0.5 * converter.sample_rate


def test_no_target_is_needed_through_any_door(lj_run, small_corpus, tmp_path):
  """A source voice in, the training speaker out: Python, the command line and the web page."""
  workdir = str(lj_run[0])
  source = small_corpus / 'esm1' / 'esm1_002.ogg'
  converter = skipvqvc_jax.load(workdir)
  alone = converter.convert(str(source))
  np.testing.assert_array_equal(alone, converter.convert(str(source), str(source)))
  out = tmp_path / 'out.wav'
  result = run_in_repo(
    [
      sys.executable,
      'main.py',
      '--mode=convert',
      f'--model={workdir}',
      f'--source={source}',
      f'--output={out}',
    ],
    timeout=600,
  )
  assert result.returncode == 0 and out.is_file(), result.stderr[-2000:]
  pytest.importorskip('gradio')
  from skipvqvc_jax.inference import page_conversions

  page = page_conversions.PageConversions(workdir, ['griffin_lim'], 60.0)
  wav, image = page.run(str(source), None, None, 'griffin_lim')
  assert wav.endswith('.wav') and image.endswith('.png')


def test_a_model_with_speakers_still_needs_a_target(workdir, small_corpus):
  converter = skipvqvc_jax.load(str(workdir))
  with pytest.raises(ConversionError, match='--target; only a speaker-free model'):
    converter.convert(str(small_corpus / 'esm1' / 'esm1_002.ogg'))
