"""Behaviour of the multi-scale family that the golden data does not pin down."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from skipvqvc_jax import models
from skipvqvc_jax.models import multi_speaker
from skipvqvc_jax.models.layers import Conv1d
from skipvqvc_jax.models.quantizer import Quantizer

SMALL = dict(channel=16, n_embed=16, gru_init='zeros')
MULTI = [n for n in models.names() if models.is_multi_scale(n)]


def _mel(batch, frames, seed=0):
  return np.random.default_rng(seed).normal(-1, 1.5, (batch, 80, frames)).astype(np.float32)


def test_the_nine_are_multi_scale_and_the_five_are_not():
  # The original's multi-scale decoders are its vqvc+_multi* folders and the two built on them
  # (vqvc+_pitch, vqvc+_lj3); the five of its section 2 decode one scale.
  built_on_multi = ('vqvc+_pitch', 'vqvc+_lj3')
  assert MULTI == [n for n in models.names() if n.startswith('vqvc+_multi') or n in built_on_multi]
  assert len(MULTI) == 9 and not any(models.is_multi_scale(n) for n in models.names()[:5])


@pytest.mark.parametrize('name', MULTI)
def test_every_entry_point_returns_every_scale_coarsest_first(name):
  model = models.build(name, **SMALL)
  source, target = _mel(2, 48), _mel(1, 32, seed=1)
  shapes = [(2, 20, 12), (2, 40, 24), (2, 80, 48)]
  # The F0 model's decoder takes the source's contour too (a rising one here).
  f0 = {'f0': np.tile(np.linspace(-0.2, 0.2, 48), (2, 1))} if model.takes_f0 else {}
  recon, enc = model.reconstruct(source, **f0)
  converted = model.convert(source, target, **f0)
  from_codes = model.decode_codes(enc.codes, enc.speaker, enc.std, enc.rhythm, **f0)
  for outputs in (recon, converted, from_codes):
    assert [o.shape for o in outputs] == shapes
  # What conversion vocodes: the mel at the source's own resolution (80 bands, every frame).
  assert models.final_mel(recon).shape == models.final_mel(converted).shape == source.shape
  # Decoding the codes of an encoding reproduces its reconstruction up to straight-through rounding.
  np.testing.assert_allclose(from_codes[-1], recon[-1], atol=1e-5)


@pytest.mark.parametrize('name', ['vqvc+_multi', 'vqvc+_multi_cav', 'vqvc+_multi_codebook_gen'])
def test_conversion_takes_the_target_speaker(name):
  model = models.build(name, **SMALL)
  source, target = _mel(1, 64), _mel(1, 64, seed=5) * 2 + 1
  converted = model.convert(source, target)[-1]
  recon = model.reconstruct(source)[0][-1]
  assert np.abs(np.asarray(converted) - np.asarray(recon)).max() > 1e-4


def test_edited_codes_change_the_output_where_they_were_edited():
  """The VQVAE notebook: encode, edit the codes of one scale, decode from the codes."""
  model = models.build('vqvc+_multi', **SMALL)
  enc = model.encode(_mel(1, 64))
  edited = [c for c in enc.codes]
  edited[2] = (enc.codes[2] + 1) % model.quantize[2].num_codes  # every coarsest code moved
  a = model.decode_codes(enc.codes, enc.speaker, enc.std)
  b = model.decode_codes(edited, enc.speaker, enc.std)
  assert all(np.abs(np.asarray(x) - np.asarray(y)).max() > 1e-3 for x, y in zip(a, b))
  with pytest.raises(ValueError, match=r'codes of scale 0 must lie in \[0, 16\); got -1'):
    model.decode_codes([enc.codes[0] - 100] + enc.codes[1:], enc.speaker, enc.std)
  with pytest.raises(ValueError, match='needs codes for all 3 scales'):
    model.decode_codes(enc.codes[:2], enc.speaker, enc.std)


def test_max_norm_lookup_renormalises_only_the_rows_it_uses_and_grads_like_a_lookup():
  quantizer = Quantizer(4, 8, max_norm=True, rngs=nnx.Rngs(0))
  table = np.array(quantizer.embedding[...])
  table[3] *= 0.1  # a short row stays as it is
  quantizer.embedding[...] = jnp.asarray(table)
  inputs = jnp.asarray(np.concatenate([table[[1, 3, 5]], table[[1]]])[None] / 7)
  out = quantizer(inputs)
  np.testing.assert_array_equal(out.codes, [[1, 3, 5, 1]])
  renormed = np.asarray(out.table)
  norms = np.linalg.norm(renormed, axis=1)
  assert np.all(np.abs(norms[[1, 5]] - 1) < 1e-6)
  np.testing.assert_array_equal(renormed[[0, 2, 3, 4, 6, 7]], table[[0, 2, 3, 4, 6, 7]])
  np.testing.assert_allclose(out.value[0, 0], renormed[1], rtol=1e-6)
  # The gradient is a plain lookup's: the upstream gradient scattered onto the used rows.
  graphdef, params = nnx.split(quantizer)
  upstream = jax.random.normal(jax.random.key(1), inputs.shape)
  grads = jax.grad(lambda p: jnp.sum(nnx.merge(graphdef, p)(inputs).value * upstream))(params)
  expected = np.zeros((8, 4), np.float32)
  np.add.at(expected, [1, 3, 5, 1], np.asarray(upstream)[0] / 2)
  np.testing.assert_allclose(grads['embedding'][...], expected, rtol=1e-5, atol=1e-7)
  # A renormalised row does not change on the next lookup.
  quantizer.embedding[...] = out.table
  np.testing.assert_array_equal(quantizer(inputs).table, out.table)


@pytest.mark.parametrize(
  'kernel,frames', [(64, 64), (64, 16), (64, 1000), (16, 3), (16, 4), (512, 40)]
)
def test_speaker_conv_over_live_taps_equals_the_full_convolution(kernel, frames):
  """Skipping taps that read only padding is exact, for short and for long inputs."""
  pad = 4 * (kernel - 1)
  conv = Conv1d(8, 16, kernel, padding=pad, groups=2, dilation=8, rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(0), (2, frames, 8))
  full = conv(x)
  assert full.shape == (2, frames, 16)
  np.testing.assert_allclose(multi_speaker._dilated(conv, x), full, atol=2e-5)
  # And so are the gradients: exactly zero for the dead taps.
  g_live = jax.grad(lambda k: jnp.sum(multi_speaker._dilated(_with_kernel(conv, k), x) ** 2))(
    conv.kernel[...]
  )
  g_full = jax.grad(lambda k: jnp.sum(_with_kernel(conv, k)(x) ** 2))(conv.kernel[...])
  np.testing.assert_allclose(g_live, g_full, atol=1e-4 * float(jnp.abs(g_full).max()) + 1e-6)


def _with_kernel(conv, kernel):
  graphdef, state = nnx.split(conv)
  clone = nnx.merge(graphdef, state)
  clone.kernel = nnx.Param(kernel)
  return clone


def test_codebook_gen_codebooks_come_from_the_speaker():
  model = models.build('vqvc+_multi_codebook_gen', **SMALL)
  enc = model.encode(np.concatenate([_mel(1, 32), _mel(1, 32, seed=9) * 3]))
  books = enc.extras['codebooks'][0]
  assert books.shape == (2, 4, 40)  # n_embed / 4 codes at the finest scale
  assert np.abs(np.asarray(books[0]) - np.asarray(books[1])).max() > 0
  with pytest.raises(ValueError, match='pass speaker and std'):
    model.lookup(enc.codes)
