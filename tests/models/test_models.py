"""Behaviour of the model family that the golden data does not pin down."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from skipvqvc_jax import models
from skipvqvc_jax.models.quantizer import Quantizer

SMALL = dict(channel=16, n_embed=16)


def _mel(batch, frames, seed=0):
  return np.random.default_rng(seed).normal(-3, 1.5, (batch, 80, frames)).astype(np.float32)


def _f0(model, mel) -> dict:
  """The F0 model's contour argument (flat: the voice's own mean everywhere); {} for the others."""
  return {'f0': np.zeros((mel.shape[0], mel.shape[2]), np.float32)} if model.takes_f0 else {}


def test_registry_names_and_unknown_name():
  assert models.names() == [
    'vqvc+',
    'vqvc+_rhythm',
    'vqvc+_resample',
    'vqvc+_speaker_quantize',
    'vqvc+_cvae',
    'vqvc+_multi',
    'vqvc+_multi_simple',
    'vqvc+_multi_rhythm',
    'vqvc+_multi_ps',
    'vqvc+_multi_cav',
    'vqvc+_multi_codebook_gen',
    'vqvc+_pitch',
    'vqvc+_multi_codebook_lj',
    'vqvc+_lj3',
  ]
  with pytest.raises(ValueError, match='valid models: vqvc\\+, vqvc\\+_rhythm'):
    models.build('vqvc', **SMALL)


def test_codebook_sizes_follow_each_variant():
  sizes = lambda name: [q.num_codes for q in models.build(name, channel=16, n_embed=64).quantize]
  assert sizes('vqvc+') == [16, 32, 64]
  assert sizes('vqvc+_rhythm') == [64, 64, 64]
  sq = models.build('vqvc+_speaker_quantize', channel=16, n_embed=64)
  assert [q.num_codes for q in sq.quantize_speakers] == [2048] * 3


@pytest.mark.parametrize('name', models.names())
def test_every_model_jits_for_two_lengths(name):
  model = models.build(name, **SMALL)
  reconstruct = nnx.jit(lambda m, x, f0, rng: models.final_mel(m.reconstruct(x, **f0, rng=rng)[0]))
  for frames in (model.frame_multiple * 2, model.frame_multiple * 3):
    mel = _mel(2, frames)
    out = reconstruct(model, mel, _f0(model, mel), jax.random.key(0))
    assert out.shape == (2, 80, frames)
    assert np.isfinite(np.asarray(out)).all()


def test_frame_multiple_is_derived_from_the_architecture():
  assert models.build('vqvc+', **SMALL).frame_multiple == 8
  assert models.build('vqvc+_rhythm', **SMALL).frame_multiple == 8
  # Codes are averaged over 4 frames at every scale, the coarsest of which is T/8.
  assert models.build('vqvc+_resample', **SMALL).frame_multiple == 32


@pytest.mark.parametrize(
  'name,frames', [('vqvc+', 100), ('vqvc+_resample', 48), ('vqvc+_resample', 0)]
)
def test_bad_frame_counts_raise_a_clear_error(name, frames):
  model = models.build(name, **SMALL)
  with pytest.raises(
    ValueError, match=f'{frames} frames, which is not a positive multiple of {model.frame_multiple}'
  ):
    model.encode(_mel(1, frames))


def test_wrong_mel_shape_raises_a_clear_error():
  model = models.build('vqvc+', **SMALL)
  with pytest.raises(ValueError, match=r'must be \(batch, 80, frames\); got \(1, 64, 64\)'):
    model.encode(np.zeros((1, 64, 64), np.float32))


def test_quantizer_splits_the_gradient_between_codebook_and_input():
  quantizer = Quantizer(4, 8, rngs=nnx.Rngs(0))
  inputs = jax.random.normal(jax.random.key(1), (3, 5, 4))
  upstream = jax.random.normal(jax.random.key(2), (3, 5, 4))
  graphdef, params = nnx.split(quantizer)

  def through_value(params, inputs):  # only the quantized value, not the latent loss
    return jnp.sum(nnx.merge(graphdef, params)(inputs).value * upstream)

  grad_params, grad_inputs = jax.grad(through_value, argnums=(0, 1))(params, inputs)
  codes = np.asarray(quantizer(inputs).codes).ravel()
  np.testing.assert_allclose(grad_inputs, upstream / 2, rtol=1e-6)
  expected = np.zeros((8, 4), np.float32)
  np.add.at(expected, codes, np.asarray(upstream).reshape(-1, 4) / 2)
  np.testing.assert_allclose(grad_params['embedding'][...], expected, rtol=1e-5, atol=1e-7)
  # Unused codes get exactly no gradient.
  unused = np.setdiff1d(np.arange(8), codes)
  assert (np.asarray(grad_params['embedding'][...])[unused] == 0).all()


def test_quantizer_picks_by_direction_but_returns_the_raw_row():
  quantizer = Quantizer(2, 2, rngs=nnx.Rngs(0))
  # Code 0 is long and points along x; code 1 is short and points along y.
  quantizer.embedding[...] = jnp.array([[10.0, 0.0], [0.0, 0.1]])
  out = quantizer(jnp.array([[[0.0, 1.0], [1.0, 0.0]]]))
  np.testing.assert_array_equal(out.codes, [[1, 0]])
  np.testing.assert_allclose(out.value, [[[0.0, 0.1], [10.0, 0.0]]], rtol=1e-6)


def test_gradient_reaches_codebooks_and_encoder_through_the_quantizer():
  model = models.build('vqvc+', gru_init='zeros', **SMALL)
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  mel = _mel(2, 64)

  def content_only(params):  # no latent loss: only the straight-through path carries gradient
    enc = nnx.merge(graphdef, params, rest).encode(mel)
    return sum(jnp.sum(q * jnp.cos(jnp.arange(q.shape[-1]))) for q in enc.content)

  grads = jax.grad(content_only)(params)
  for s in range(3):
    assert np.abs(np.asarray(grads['quantize'][s]['embedding'][...])).sum() > 0
    assert np.abs(np.asarray(grads['enc'][s]['conv_in']['kernel'][...])).sum() > 0


def test_gru_initial_state_noise_is_explicit_and_optional():
  mel = _mel(1, 32)
  noisy = models.build('vqvc+', gru_init='normal', **SMALL)
  a = noisy.reconstruct(mel, rng=jax.random.key(0))[0]
  b = noisy.reconstruct(mel, rng=jax.random.key(0))[0]
  c = noisy.reconstruct(mel, rng=jax.random.key(1))[0]
  np.testing.assert_array_equal(a, b)
  assert np.abs(np.asarray(a) - np.asarray(c)).max() > 1e-4
  # Without a key the model draws from its own stream, so two calls differ.
  assert (
    np.abs(np.asarray(noisy.reconstruct(mel)[0]) - np.asarray(noisy.reconstruct(mel)[0])).max() > 0
  )
  quiet = models.build('vqvc+', gru_init='zeros', **SMALL)
  np.testing.assert_array_equal(quiet.reconstruct(mel)[0], quiet.reconstruct(mel)[0])


def test_convert_uses_target_speaker_and_broadcasts_one_target():
  model = models.build('vqvc+', gru_init='zeros', **SMALL)
  source, target = _mel(3, 64, seed=1), _mel(1, 48, seed=2) + 1.0
  converted = models.final_mel(model.convert(source, target))
  assert converted.shape == (3, 80, 64)
  src, tgt = model.encode(source), model.encode(target)
  speaker = [jnp.broadcast_to(t, (3,) + t.shape[1:]) for t in tgt.speaker]
  np.testing.assert_allclose(converted, model.decode(src.content, speaker, src.std)[-1], atol=1e-5)
  assert np.abs(np.asarray(converted) - np.asarray(model.reconstruct(source)[0][-1])).max() > 1e-3


@pytest.mark.parametrize('name', models.names())
def test_every_model_decodes_to_a_list_of_scales_ending_with_the_mel(name):
  model = models.build(name, gru_init='zeros', **SMALL)
  mel = _mel(1, model.frame_multiple * 2)
  recon, enc = model.reconstruct(mel, **_f0(model, mel))
  assert isinstance(recon, list) and len(recon) == (3 if model.multi_scale else 1)
  # Coarsest first: scale j of a multi-scale model has 1/2^(2-j) of the bands and frames.
  assert [r.shape for r in recon] == [
    (1, 80 >> (len(recon) - 1 - j), mel.shape[2] >> (len(recon) - 1 - j)) for j in range(len(recon))
  ]
  from_codes = model.decode_codes(enc.codes, enc.speaker, enc.std, enc.rhythm, **_f0(model, mel))
  assert [r.shape for r in from_codes] == [r.shape for r in recon]
  if not model.takes_content_mel:
    with pytest.raises(ValueError, match='no rhythm path'):
      model.encode(mel, mel)
  if name != 'vqvc+_cvae':
    with pytest.raises(ValueError, match='draws no noise'):
      model.encode(mel, noise=[None] * 3)


def test_rhythm_model_takes_rhythm_from_its_first_input():
  model = models.build('vqvc+_rhythm', gru_init='zeros', **SMALL)
  mel, other = _mel(1, 64, 1), _mel(1, 64, 2)
  a, b = model.encode(mel, other), model.encode(other, other)
  np.testing.assert_allclose(a.content[0], b.content[0])
  assert np.abs(np.asarray(a.rhythm[0]) - np.asarray(b.rhythm[0])).max() > 1e-3
  with pytest.raises(ValueError, match='same shape'):
    model.encode(_mel(1, 64), _mel(1, 32))


def test_cvae_noise_is_reproducible_from_a_key():
  model = models.build('vqvc+_cvae', **SMALL)
  mel = _mel(2, 32)
  a = model.encode(mel, rng=jax.random.key(3)).speaker[0]
  b = model.encode(mel, rng=jax.random.key(3)).speaker[0]
  c = model.encode(mel, rng=jax.random.key(4)).speaker[0]
  np.testing.assert_array_equal(a, b)
  assert np.abs(np.asarray(a) - np.asarray(c)).max() > 0
