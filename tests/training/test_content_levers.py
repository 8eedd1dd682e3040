"""The levers for keeping content in the codes, off in the original's presets: the spectrogram-resize
augmentation (`content_resize`: the content path sees the mel moved along frequency, the speaker terms
and the target are the mel itself), the AdaIN-style speaker scale (`model.speaker_scale`) and the
contrastive prediction of the content codes (`model.predict_steps`)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import skipvqvc_jax
from skipvqvc_jax import models
from skipvqvc_jax.core.errors import ConfigError, PortError
from skipvqvc_jax.inference import model_dirs
from skipvqvc_jax.training import loop, trainers
from skipvqvc_jax.training.tasks import voice_conversion
from tests.conftest import tiny_config

MULTI = 'vqvc_plus_multi.py:tiny'


def _ramp(batch=2, bands=80, frames=32):
  """Mels whose every band holds its own index: where a band came from can be read off."""
  return jnp.broadcast_to(
    jnp.arange(bands, dtype=jnp.float32)[None, :, None], (batch, bands, frames)
  )


def test_resize_moves_the_spectrum_along_frequency_and_fills_what_it_leaves():
  mel = _ramp()
  up, down = np.asarray(trainers.resize_bands(mel, jnp.array([2.0, 0.5])))
  np.testing.assert_allclose(up[:, 0], np.arange(80) / 2, atol=1e-5)  # band k reads band k / 2
  np.testing.assert_allclose(down[:40, 0], np.arange(40) * 2, atol=1e-5)  # band k reads band 2k
  assert (down[40:] == 0).all()  # above the top of the old axis: the mel's lowest value
  same = trainers.resize_bands(mel + 3.0, jnp.ones(2))
  np.testing.assert_array_equal(np.asarray(same), np.asarray(mel + 3.0))


def test_resized_content_is_decoded_with_the_unchanged_mels_speaker():
  model = models.build('vqvc+_multi', channel=16, n_embed=16)  # a deterministic decoder
  mel = jnp.asarray(np.random.default_rng(0).normal(size=(2, 80, 32)), jnp.float32)
  rng = jax.random.key(3)
  nearly_one, _ = trainers.resized_reconstruction(model, mel, None, rng, 1e-7)
  plain, _ = model.reconstruct(mel)
  np.testing.assert_allclose(np.asarray(nearly_one[-1]), np.asarray(plain[-1]), atol=1e-4)
  # With a real spread: the resized copy's content, the mel's own speaker terms.
  recon, enc = trainers.resized_reconstruction(model, mel, None, rng, 0.3)
  ratio_key = jax.random.split(jax.random.fold_in(rng, 2), 3)[0]
  ratios = jax.random.uniform(ratio_key, (2,), minval=0.7, maxval=1.3)
  moved, own = model.encode(trainers.resize_bands(mel, ratios)), model.encode(mel)
  expected = model.decode(moved.content, own.speaker, own.std)
  np.testing.assert_allclose(np.asarray(recon[-1]), np.asarray(expected[-1]), atol=1e-4)
  assert enc.codes[0].shape[0] == 4  # both copies went through the encoder (one batch)
  assert np.abs(np.asarray(recon[-1]) - np.asarray(plain[-1])).max() > 1e-3


def test_the_speaker_scale_is_one_on_average_and_ignores_the_utterance_length():
  model = models.build('vqvc+_multi', channel=16, n_embed=16, speaker_scale=True)
  q, sp = jnp.ones((1, 8, 10)), jnp.zeros((1, 1, 10))
  std = jnp.linspace(0.5, 1.5, 10)[None, None]
  gain = model._stage_input(0, q, sp, std, None)
  np.testing.assert_allclose(np.asarray(gain.mean(-1)), 1.0, rtol=1e-6)
  # A norm over twice the frames is sqrt(2) larger in every channel: the same gain.
  np.testing.assert_allclose(
    np.asarray(model._stage_input(0, q, sp, std * 2**0.5, None)), np.asarray(gain), rtol=1e-6
  )
  plain = models.build('vqvc+_multi', channel=16, n_embed=16)
  np.testing.assert_array_equal(np.asarray(plain._stage_input(0, q, sp, std, None)), np.asarray(q))


def test_the_content_predictor_sees_only_the_past_and_conversion_never_calls_it():
  model = models.build('vqvc+_multi', channel=16, n_embed=16, predict_steps=3)
  z = jnp.asarray(np.random.default_rng(1).normal(size=(2, 16, 40)), jnp.float32)
  later = z.at[:, 10:].set(0.0)  # frames from 10 on changed
  np.testing.assert_array_equal(
    np.asarray(model.predictor.context(z)[:, :10]),
    np.asarray(model.predictor.context(later)[:, :10]),
  )
  loss = float(model.predictor.loss(z))
  assert np.isfinite(loss) and loss > 0
  plain = models.build('vqvc+_multi', channel=16, n_embed=16)  # the same seed, no head
  mel = jnp.asarray(np.random.default_rng(0).normal(size=(1, 80, 32)), jnp.float32)
  np.testing.assert_array_equal(
    np.asarray(model.convert(mel, mel)[-1]), np.asarray(plain.convert(mel, mel)[-1])
  )
  assert 'predictor.heads.0.kernel' not in str(list(model.torch_table()))  # porting drops it


def test_codes_of_their_own_width_are_matched_there_and_decode_back():
  model = models.build('vqvc+_multi', channel=16, n_embed=16, code_dim=24)
  mel = jnp.asarray(np.random.default_rng(2).normal(size=(2, 80, 32)), jnp.float32)
  enc = model.encode(mel)
  for s, quantizer in enumerate(model.quantize):
    assert quantizer.embedding.shape == (model.codebook_sizes(16)[s], 24)
    z = np.asarray(enc.quantizer_in[s]).reshape(-1, 24)  # the codebook's own space
    rows = np.asarray(quantizer.embedding[...])
    units = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    nearest = np.argmin(((z[:, None] - units[None]) ** 2).sum(-1), axis=1)
    np.testing.assert_array_equal(np.asarray(enc.codes[s]).reshape(-1), nearest)
  # The content is the chosen rows mapped back to the stage's width: the codes alone rebuild it.
  for looked_up, content in zip(model.lookup(enc.codes), enc.content):
    assert looked_up.shape == content.shape
    np.testing.assert_allclose(np.asarray(looked_up), np.asarray(content), atol=1e-5)
  assert 'code_dim=24' in model.describe()


@pytest.mark.parametrize(
  'overrides, flag',
  [
    ({'model.name': 'vqvc+_multi_ps', 'model.code_dim': 16}, 'model.code_dim'),
    ({'model.code_dim': -1}, 'model.code_dim'),
    ({'model.name': 'vqvc+_multi_ps', 'model.speaker_scale': True}, 'model.speaker_scale'),
    ({'content_resize': 1.5}, 'content_resize'),
    ({'model.predict_steps': 16}, 'model.predict_steps'),
    (
      {
        'model.name': 'vqvc+_multi_rhythm',
        'trainer': 'simple_normalize_multi_rhythm',
        'content_resize': 0.15,
      },
      'content_resize',
    ),
  ],
)
def test_a_lever_a_model_cannot_take_is_one_line(small_features, overrides, flag):
  config = tiny_config(small_features, MULTI, **overrides)
  with pytest.raises(ConfigError, match=f'--config.{flag}'):
    voice_conversion.check_config(config)


def test_the_levers_train_together_and_the_model_converts_as_it_was_built(small_features, tmp_path):
  config = tiny_config(
    small_features,
    MULTI,
    num_train_steps=2,
    checkpoint_every_steps=2,
    content_resize=0.15,
    **{
      'model.speaker_scale': True,
      'model.predict_steps': 2,
      'model.code_dim': 16,
      'codebook.restart_below': 0.5,  # upkeep restarts codes from code-space vectors
    },
  )
  metrics = loop.train_and_evaluate(config, str(tmp_path / 'run'))
  assert np.isfinite(float(metrics['last_train']['prediction_loss']))
  converter = skipvqvc_jax.load(str(tmp_path / 'run'))
  spec = converter.model.spec()
  assert (spec['speaker_scale'], spec['predict_steps'], spec['code_dim']) == (True, 2, 16)
  source = sorted((small_features / 'test').glob('*.npy'))[0]
  target = sorted((small_features / 'test').glob('*.npy'))[-1]
  mel = converter.convert_mel(np.load(source), converter.speaker([np.load(target)]))
  assert mel.shape[0] == 80 and np.isfinite(mel).all()
  # The original's model has neither the scale nor the projections: no .pt that would convert otherwise.
  with pytest.raises(PortError, match='model.speaker_scale, model.code_dim'):
    model_dirs.export(str(tmp_path / 'run'), str(tmp_path / 'model.pt'))
  assert not (tmp_path / 'model.pt').exists()
