"""The MelGAN generator against the golden outputs of melgan-neurips, its porting, and the rewritten
convolutions (polyphase transposed; strided and grouped with matmul gradients) against XLA's."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from skipvqvc_jax import vocoders
from skipvqvc_jax.models import melgan
from skipvqvc_jax.store import porting
from tests.conftest import parity_file


@pytest.fixture(scope='module')
def golden(parity_dir):
  with np.load(parity_file(parity_dir, 'melgan_generator.npz')) as data:
    return {k: data[k] for k in data.files}


@pytest.fixture(scope='module')
def generator(golden):
  state_dict = {k.removeprefix('param/'): v for k, v in golden.items() if k.startswith('param/')}
  return porting.load_state_dict(melgan.MelGANGenerator(), state_dict)


def test_audio_matches_the_original(generator, golden):
  run = jax.jit(lambda m: (generator(m), generator(m, pre_tanh=True)))
  audio, pre_tanh = map(np.asarray, run(golden['input/mel']))
  assert audio.shape == (2, 134 * 256)
  assert np.abs(audio - golden['out/audio'][:, 0]).max() <= 1e-5
  assert np.abs(pre_tanh - golden['out/pre_tanh'][:, 0]).max() <= 1e-5
  # The base output is nearly constant; compare its variation too.
  centred = audio - audio.mean()
  golden_centred = golden['out/audio'][:, 0] - golden['out/audio'].mean()
  assert np.abs(centred - golden_centred).max() <= 1e-6


def test_intermediate_activations_and_weights(generator, golden):
  mel = golden['input/mel'][:1]
  x = generator.conv_in(melgan._reflect(np.swapaxes(mel, 1, 2), 3))
  act = golden['act/conv_in'].transpose(0, 2, 1)
  assert np.abs(np.asarray(x) - act).max() <= 1e-5 * np.abs(act).max()
  up = generator.ups[0].up(jax.nn.leaky_relu(x, 0.2))
  act = golden['act/up0_convT'].transpose(0, 2, 1)
  assert np.abs(np.asarray(up) - act).max() <= 1e-5 * np.abs(act).max()
  for name, (variable, _) in generator.torch_table().items():
    if name.endswith('weight_v'):
      layer = name.removesuffix('.weight_v')
      derived = golden[f'derived/{layer}.weight']
      owner = next(m for m in _layers(generator) if m.v is variable)
      assert np.abs(np.asarray(owner.weight()) - derived).max() <= 1e-7, layer


def _layers(generator):
  yield generator.conv_in
  for up in generator.ups:
    yield up.up
    for block in up.blocks:
      yield from (block.conv_dilated, block.conv_1x1, block.shortcut)
  yield generator.conv_out


def test_hot_weights_give_a_full_waveform_that_matches(golden):
  state_dict = {
    k.removeprefix('param/'): v * np.float32(1.75) if k.endswith('weight_g') else v
    for k, v in golden.items()
    if k.startswith('param/')
  }
  generator = porting.load_state_dict(melgan.MelGANGenerator(), state_dict)
  audio = np.asarray(jax.jit(generator)(golden['input/mel']))
  assert audio.std() > 0.1  # a real waveform, not the near-constant base output
  np.testing.assert_allclose(audio, golden['hot/out/audio'][:, 0], atol=2e-5, rtol=1e-4)


def test_port_names_missing_keys(golden):
  state_dict = {
    k.removeprefix('param/'): v
    for k, v in golden.items()
    if k.startswith('param/') and k != 'param/model.24.bias'
  }
  with pytest.raises(porting.PortError, match=r'MelGAN generator .* missing keys: model\.24\.bias'):
    porting.load_state_dict(melgan.MelGANGenerator(), state_dict)


def test_cli_port_and_vocoder_directory(golden, ported_melgan, tmp_path):
  directory, stdout = ported_melgan
  assert '"ngf": 32' in stdout and '"residual_layers": 3' in stdout
  vocoder = vocoders.get(str(directory))
  wave = vocoder(golden['input/mel'][0])
  assert wave.shape == (134 * 256,) and vocoder.sample_rate == 22050
  assert np.abs(wave - golden['out/audio'][0, 0]).max() <= 1e-5
  with pytest.raises(ValueError, match='unknown vocoder'):
    vocoders.get(str(tmp_path / 'nothing'))


def _lax_transposed(x, w, s):
  k, p = w.shape[2], s // 2 + s % 2
  return jax.lax.conv_general_dilated(
    x,
    jnp.flip(w, 2).transpose(1, 0, 2),
    (1,),
    [(k - 1 - p, k - 1 - p + s % 2)],
    lhs_dilation=(s,),
    dimension_numbers=('NWC', 'OIW', 'NWC'),
    precision='highest',
  )


def _lax_conv(x, w, s, p, g):
  return jax.lax.conv_general_dilated(
    x,
    w,
    (s,),
    [(p, p)],
    feature_group_count=g,
    dimension_numbers=('NWC', 'OIW', 'NWC'),
    precision='highest',
  )


def _assert_same_with_gradients(ours, reference, x, w):
  np.testing.assert_allclose(ours(x, w), reference(x, w), rtol=1e-5, atol=1e-4)
  loss = lambda f: lambda x, w: jnp.sum(f(x, w) ** 2)
  for a, b in zip(jax.grad(loss(ours), (0, 1))(x, w), jax.grad(loss(reference), (0, 1))(x, w)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * float(jnp.abs(b).max()))


@pytest.mark.parametrize('stride,kernel', [(8, 16), (2, 4), (3, 6), (5, 10), (3, 7)])
def test_polyphase_transposed_conv_matches_xla(stride, kernel):
  rng = np.random.default_rng(stride * kernel)
  x = rng.normal(size=(2, 5, 6)).astype(np.float32)
  w = rng.normal(size=(6, 4, kernel)).astype(np.float32)
  _assert_same_with_gradients(
    lambda x, w: melgan._transposed_conv(x, w, stride),
    lambda x, w: _lax_transposed(x, w, stride),
    x,
    w,
  )


@pytest.mark.parametrize(
  'stride,kernel,padding,groups', [(4, 41, 20, 4), (4, 41, 20, 2), (3, 5, 2, 1), (2, 7, 1, 3)]
)
def test_strided_grouped_conv_matches_xla(stride, kernel, padding, groups):
  rng = np.random.default_rng(kernel + groups)
  x = rng.normal(size=(2, 67, 12)).astype(np.float32)
  w = rng.normal(size=(6 * groups, 12 // groups, kernel)).astype(np.float32)
  _assert_same_with_gradients(
    lambda x, w: melgan._strided_grouped_conv(x, w, stride, padding, groups),
    lambda x, w: _lax_conv(x, w, stride, padding, groups),
    x,
    w,
  )
