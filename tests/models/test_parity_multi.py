"""The multi-scale family against golden outputs of the original (../shared/parity/README.md, multi/).

Every encoder output, code, speaker/std term and decoder scale for reconstruction, speaker-swapped
conversion and decoding from codes; one training step through our trainers (loss, gradients, weights
after Adam, including the codebook rows the max_norm lookup renormalised).
"""

import json

import jax
import numpy as np
import optax
import pytest
from flax import nnx

from skipvqvc_jax import models
from skipvqvc_jax.configs import default
from skipvqvc_jax.store import porting
from skipvqvc_jax.training import trainers
from skipvqvc_jax.training.tasks import voice_conversion
from tests.conftest import assert_close, assert_gradients_match, assert_step_matches

GOLDEN = {
  'vqvc+_multi': 'vqvcplus_multi_n64_ch64.npz',
  'vqvc+_multi_simple': 'vqvcplus_multi_simple_n64_ch64.npz',
  'vqvc+_multi_rhythm': 'vqvcplus_multi_rhythm_n64_ch64.npz',
  'vqvc+_multi_ps': 'vqvcplus_multi_ps_n64_ch64.npz',
  'vqvc+_multi_cav': 'vqvcplus_multi_cav_n64_ch64.npz',
  'vqvc+_multi_codebook_gen': 'vqvcplus_multi_codebook_gen_n64_ch64.npz',
}
MAX_NORM = ('vqvc+_multi', 'vqvc+_multi_simple', 'vqvc+_multi_ps')
ATOL = 1e-4
SWAP_ATOL = 1e-5  # the README: cav/codebook_gen/ps conversions differ from recon by only 1e-3


@pytest.fixture(scope='module', params=list(GOLDEN))
def golden(request, parity_dir):
  """(name, golden arrays, manifest meta, a loader of fresh models with the golden weights)."""
  name = request.param
  with np.load(parity_dir / 'multi' / GOLDEN[name], allow_pickle=False) as data:
    arrays = {k: data[k] for k in data.files}
  manifest = json.loads((parity_dir / 'multi' / 'manifest.json').read_text())
  meta = next(v for k, v in manifest['files'].items() if k.endswith(GOLDEN[name]))['meta']
  state_dict = {k.removeprefix('param/'): v for k, v in arrays.items() if k.startswith('param/')}

  def fresh():
    # Ported the way users port: sizes read from the weights, unused modules dropped.
    sizes = models.get_class(name).sizes_from_torch(state_dict)
    assert sizes == dict(channel=64, n_embed=64, in_channel=80)
    return porting.load_state_dict(models.build(name, **sizes, gru_init='zeros'), state_dict)

  return name, arrays, meta, fresh


def _encode(name, model, g):
  if name == 'vqvc+_multi_rhythm':
    return model.encode(g['input/x'], g['input/x_shuffle'])
  return model.encode(g['input/x'])


def _close(actual, expected, what, atol=ATOL):
  assert_close(actual, expected, what, atol)


def _scales(outputs, g, key, what, atol=ATOL):
  assert len(outputs) == 3
  for j, out in enumerate(outputs):
    _close(out, g[f'{key}_d{j}'], f'{what} d{j}', atol)


def test_encode(golden):
  name, g, _, fresh = golden
  model = fresh()
  enc = _encode(name, model, g)
  for s in range(3):
    _close(enc.encoder_out[s], g[f'out/enc_s{s}'], f'enc_s{s}')
    _close(enc.quantizer_in[s], g[f'out/qin_s{s}'], f'qin_s{s}')
    np.testing.assert_array_equal(enc.codes[s], g[f'out/codes_s{s}'], err_msg=f'codes_s{s}')
    _close(enc.content_losses[s], g[f'out/qdiff_s{s}'], f'qdiff_s{s}')
    if name == 'vqvc+_multi_codebook_gen':
      _close(enc.extras['quantized'][s], g[f'out/q_s{s}'].transpose(0, 2, 1), f'q_s{s}')
      _close(enc.content[s], g[f'out/sq_s{s}'], f'sq_s{s}')
      _close(enc.extras['simple_quantizer_in'][s], g[f'out/sqin_s{s}'], f'sqin_s{s}')
      np.testing.assert_array_equal(enc.extras['simple_codes'][s], g[f'out/scodes_s{s}'])
      _close(enc.extras['simple_losses'][s], g[f'out/sqdiff_s{s}'], f'sqdiff_s{s}')
      for k, term in ((2, enc.speaker), (3, enc.std)):
        _close(term[s][..., 0], g[f'out/spk{k}_s{s}'], f'spk{k}_s{s}')
      _close(enc.extras['codebooks'][s], g[f'out/codebook_s{s}'], f'codebook_s{s}')
    else:
      _close(enc.content[s], g[f'out/q_s{s}'], f'q_s{s}')
      _close(enc.speaker[s], g[f'out/sp_s{s}'], f'sp_s{s}')
      if f'out/std_s{s}' in g:
        _close(enc.std[s], g[f'out/std_s{s}'], f'std_s{s}')
    if name in ('vqvc+_multi_cav', 'vqvc+_multi_codebook_gen'):
      _close(enc.extras['speaker_pool'][s], g[f'out/spk_pool_s{s}'], f'spk_pool_s{s}')
    if name == 'vqvc+_multi_cav':
      _close(enc.extras['quantizer_mse'][s], g[f'out/qmse_s{s}'], f'qmse_s{s}')
      _close(enc.extras['quantizer_spread'][s], g[f'out/qentropy_s{s}'], f'qentropy_s{s}', 1e-2)
    if name == 'vqvc+_multi_rhythm':
      _close(enc.extras['rhythm_encoder_out'][s], g[f'out/enc_rhy_s{s}'], f'enc_rhy_s{s}')
      _close(enc.rhythm[s], g[f'out/rhy_s{s}'], f'rhy_s{s}')
    if name == 'vqvc+_multi_ps':
      _close(enc.extras['group_norm_out'][s], g[f'out/gn_s{s}'].transpose(0, 2, 1), f'gn_s{s}')
    if name in MAX_NORM:
      _close(
        enc.extras['renormed_codebooks'][s],
        g[f'out/codebook_after_encode_s{s}'],
        f'codebook_s{s}',
        1e-6,
      )
  _close(enc.latent_loss, g['out/latent_diff'], 'latent_diff')


def test_reconstruction_conversion_and_decoding_from_codes(golden):
  name, g, _, fresh = golden
  model = fresh()
  enc = _encode(name, model, g)
  _scales(model.decode(enc.content, enc.speaker, enc.std, enc.rhythm), g, 'out/recon', 'recon')
  perm = g['input/swap_perm']
  swap = lambda terms: None if terms is None else [t[perm] for t in terms]
  converted = model.decode(enc.content, swap(enc.speaker), swap(enc.std), swap(enc.rhythm))
  _scales(converted, g, 'out/convert_swap', 'convert_swap', SWAP_ATOL)
  if name == 'vqvc+_multi_codebook_gen':
    # No notebook: the codes index each item's own generated codebook.
    _scales(model.decode_codes(enc.codes, enc.speaker, enc.std), g, 'out/recon', 'from codes')
    # Conversion re-quantizes the source's content against the other speaker's codebook.
    for s in range(3):
      conv_q = model._requantize(
        s, enc.content[s].transpose(0, 2, 1), enc.speaker[s][perm], enc.std[s][perm]
      )
      _close(conv_q, g[f'out/conv_q_s{s}'].transpose(0, 2, 1), f'conv_q_s{s}')
    _close(model.training_latent(enc, perm=perm), g['out/latent_perm_term'], 'perm term', 1e-6)
    return
  from_codes = model.decode_codes(
    [g[f'out/codes_s{s}'] for s in range(3)], enc.speaker, enc.std, enc.rhythm
  )
  _scales(from_codes, g, 'out/recon_from_codes', 'recon_from_codes')


def _trainer_inputs(name, g):
  """The step's inputs as our trainer takes them: raw log-mels, the golden's fixed stretch."""
  frames = g['input/x'].shape[-1]
  index = np.concatenate(
    [
      32 * n + np.floor(np.arange(int(32 * f)) * np.float32(1 / f)).astype(int)
      for n, f in enumerate((0.5, 1.5, 1.25, 0.75))
    ]
  )
  assert index.size == frames
  stretched = g['input/x_logmel'][..., index]
  np.testing.assert_array_equal(
    trainers.get('simple_normalize_multi').normalize(stretched), g['input/x_shuffle']
  )
  if name == 'vqvc+_multi_rhythm':
    return 'simple_normalize_multi_rhythm', dict(mel=g['input/x_logmel'], content_mel=stretched)
  return 'simple_normalize_multi', dict(mel=stretched)


def _permutation_key(perm):
  """A key whose batch permutation is the golden's, so codebook_gen's training term matches."""
  return next(
    k
    for k in (jax.random.key(i) for i in range(100))
    if (np.asarray(jax.random.permutation(trainers.latent_key(k), len(perm))) == perm).all()
  )


def test_training_step(golden):
  name, g, meta, fresh = golden
  model = fresh()
  trainer_name, inputs = _trainer_inputs(name, g)
  trainer = trainers.get(trainer_name)
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  params = nnx.to_pure_dict(params)  # as a train state holds them
  rng = _permutation_key(g['input/swap_perm'])

  def loss_fn(params):
    return trainer.loss(nnx.merge(graphdef, params, rest), inputs, rng, 0.1)

  (loss, aux), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(params)
  _close(loss, g['train/loss'], 'loss', 1e-5)
  _close(aux['recon_loss'], g['train/recon_loss'], 'recon_loss', 1e-5)
  _close(aux['latent_loss'], g['train/latent_loss'], 'latent_loss', 1e-5)
  for j in range(3):
    _close(aux['recon_losses'][j], g[f'train/recon_loss_d{j}'], f'recon_loss_d{j}', 1e-5)
  np.testing.assert_allclose(optax.tree.norm(grads), g['train/grad_total_norm'], rtol=1e-4)

  golden_grads = assert_gradients_match(nnx.merge(graphdef, grads, rest), g)

  # Our step itself: renormalised codebook rows written back, then clip to 3 and Adam.
  tx = voice_conversion.make_optimizer(default.get_config())
  params = voice_conversion.renormed_params(params, aux)
  if name in MAX_NORM:
    for s in range(3):
      _close(
        params['quantize'][s]['embedding'],
        g[f'train/codebook_renormed_s{s}'],
        f'codebook_renormed_s{s}',
        1e-6,
      )
  updates, _ = tx.update(grads, tx.init(params), params)
  stepped = porting.export_state_dict(
    nnx.merge(graphdef, optax.apply_updates(params, updates), rest)
  )
  # Too big to store: the manifest has their sums and how much moved.
  assert_step_matches(stepped, g, golden_grads, meta.get('step1_param_omitted', {}))
