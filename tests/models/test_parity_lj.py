"""The speaker-free LJSpeech models (`vqvc+_multi_codebook_lj`, `vqvc+_lj3`) against golden outputs of
the original (scripts/make_parity_data.py writes lj/ from a clone of ericwudayi/SkipVQVC; run with
SKIPVQVC_PARITY_DIR=that folder): every encoder output (each stage reading the previous one's
normalised frames), code and latent term, each decoder scale for reconstruction and decoding from codes,
and the reconstruction part of train_ljvae.py's step (loss, gradients, weights after Adam); the
critic, the whole ljvae step and train_time_multi.py's step."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from skipvqvc_jax.configs import default
from skipvqvc_jax.models.began import BatchStat, BeganDiscriminator, SpectralVector
from skipvqvc_jax.models.single_speaker import VQVCPlusLJ3, VQVCPlusMultiCodebookLJ
from skipvqvc_jax.store import porting
from skipvqvc_jax.training import trainers
from skipvqvc_jax.training.tasks import began, voice_conversion
from tests.conftest import (
  assert_adam_step_matches,
  assert_close,
  assert_step_matches,
  golden_loss_and_gradients,
  load_golden,
)
from tests.models.test_parity_multi import _trainer_inputs

GOLDEN = {
  VQVCPlusMultiCodebookLJ: 'lj/vqvcplus_multi_codebook_lj_n64_ch64.npz',
  VQVCPlusLJ3: 'lj/vqvcplus_lj3_n64_ch64.npz',
}
ATOL = 1e-4


def _critic(state_dict) -> BeganDiscriminator:
  """NetD(80) at the golden's width: 512 as the original has it, narrower in small goldens."""
  return BeganDiscriminator(80, width=state_dict['head.weight_orig'].shape[1])


@pytest.fixture(scope='module', params=list(GOLDEN), ids=lambda c: c.name)
def golden(request, parity_dir):
  cls = request.param
  g = load_golden(parity_dir, GOLDEN[cls])
  state_dict = {k.removeprefix('param/'): v for k, v in g.items() if k.startswith('param/')}

  def fresh():
    sizes = cls.sizes_from_torch(state_dict)  # n64_ch64, or narrower (make_parity_data.py --small)
    assert sizes['in_channel'] == 80
    return porting.load_state_dict(cls(**sizes, gru_init='zeros'), state_dict)

  return cls, g, fresh


def _scales(outputs, g, key, atol=ATOL):
  assert len(outputs) == 3
  for j, out in enumerate(outputs):
    assert_close(out, g[f'{key}_d{j}'], f'{key} d{j}', atol)


def test_every_output(golden):
  cls, g, fresh = golden
  model = fresh()
  enc = model.encode(g['input/x'])
  for s in range(3):
    assert_close(enc.encoder_out[s], g[f'out/enc_s{s}'], f'enc_s{s}', ATOL)
    assert_close(enc.quantizer_in[s], g[f'out/qin_s{s}'], f'qin_s{s}', ATOL)
    assert_close(enc.quantizer_in[s], g[f'out/xnorm_s{s}'].transpose(0, 2, 1), f'xnorm_s{s}', ATOL)
    np.testing.assert_array_equal(enc.codes[s], g[f'out/codes_s{s}'], err_msg=f'codes_s{s}')
    assert_close(enc.content[s], g[f'out/q_s{s}'], f'q_s{s}', ATOL)
    assert_close(enc.content_losses[s], g[f'out/qdiff_s{s}'], f'qdiff_s{s}', ATOL)
    if cls.max_norm:
      renormed = enc.extras['renormed_codebooks'][s]
      assert_close(renormed, g[f'out/codebook_after_encode_s{s}'], f'codebook_s{s}', 1e-6)
  assert_close(enc.latent_loss, g['out/latent_diff'], 'latent_diff', ATOL)
  _scales(model.decode(enc.content, enc.speaker, enc.std), g, 'out/recon')
  codes = [g[f'out/codes_s{s}'] for s in range(3)]
  _scales(model.decode_codes(codes, enc.speaker, enc.std), g, 'out/recon_from_codes')
  # Any-to-one: another utterance's (zero) speaker terms change nothing.
  other = model.encode(g['input/x'][::-1])
  _scales(model.decode(enc.content, other.speaker, other.std), g, 'out/recon')


def test_training_step(golden):
  """train_ljvae.py's reconstruction step on the stretched input: simple normalisation, L1 at every
  scale, + 0.1 x the latent loss, clip to 3, Adam (its adversarial step is not here yet)."""
  cls, g, fresh = golden
  graphdef, params, rest = nnx.split(fresh(), nnx.Param, ...)
  params = nnx.to_pure_dict(params)
  _, inputs = _trainer_inputs(cls.name, g)
  trainer = trainers.get('simple_normalize_multi')
  aux, grads, golden_grads = golden_loss_and_gradients(trainer, graphdef, params, rest, inputs, g)
  params = voice_conversion.renormed_params(params, aux)
  if cls.max_norm:
    for s in range(3):
      embedding = params['quantize'][s]['embedding']
      assert_close(embedding, g[f'train/codebook_renormed_s{s}'], f'renormed_s{s}', 1e-6)
  assert_adam_step_matches(graphdef, params, rest, grads, g, golden_grads)


def test_the_began_discriminator(parity_dir):
  """train_ljvae.py's NetD in training mode: three calls in a row (each moving the spectral norms' u
  and the running statistics on, as PyTorch's hooks do), the state after them, and the gradients of
  mean |D(x) - x| at the first call."""
  g = load_golden(parity_dir, 'lj/netd_80.npz')
  state_dict = {k.removeprefix('param/'): v for k, v in g.items() if k.startswith('param/')}
  netd = porting.load_state_dict(_critic(state_dict), state_dict)

  def loss_fn(model, x):
    out = model(x)
    return jnp.mean(jnp.abs(out - x)), out

  # Differentiated by its parameters; the call's moves of u and of the statistics stay in `netd`.
  grad_fn = nnx.value_and_grad(loss_fn, argnums=nnx.DiffState(0, nnx.Param), has_aux=True)
  (loss, first), grads = grad_fn(netd, g['input/x'])
  assert_close(first, g['out/call0'], 'call 0', ATOL)
  assert_close(loss, g['out/loss0'], 'loss 0', 1e-6)
  graphdef, _, rest = nnx.split(netd, nnx.Param, ...)
  grad_model = nnx.merge(graphdef, grads, rest)
  for name, (variable, _) in grad_model.torch_table().items():
    if f'grad/{name}' in g:
      expected = g[f'grad/{name}']
      np.testing.assert_allclose(
        variable[...], expected, rtol=1e-3, atol=1e-6 + 1e-4 * np.abs(expected).max(), err_msg=name
      )
  assert_close(netd(g['input/y']), g['out/call1'], 'call 1', ATOL)
  assert_close(netd(g['input/x']), g['out/call2'], 'call 2', ATOL)
  for name, value in porting.export_state_dict(netd).items():
    assert_close(value, g[f'after/{name}'], f'after {name}', 1e-5)


def test_one_ljvae_step(parity_dir):
  """train_ljvae.py's whole step on vqvc+_multi_codebook_lj (codes of every scale swapped across the
  batch, all gradients at the step's parameters): the losses, k, the model after its Adam and the
  decoder's, the critic after its Adam with its state moved three calls on."""
  g = load_golden(parity_dir, 'lj/ljvae_step_n64_ch64.npz')
  state_dict = {k.removeprefix('param/'): v for k, v in g.items() if k.startswith('param/')}
  model = porting.load_state_dict(
    VQVCPlusMultiCodebookLJ(
      **VQVCPlusMultiCodebookLJ.sizes_from_torch(state_dict), gru_init='zeros'
    ),
    state_dict,
  )
  critic_dict = {k.removeprefix('dparam/'): v for k, v in g.items() if k.startswith('dparam/')}
  critic = porting.load_state_dict(_critic(critic_dict), critic_dict)
  config = default.get_config()
  config.trainer = 'ljvae'
  adversary = began.Began(config, model)
  adversary.graphdef, adversary.critic_params, adversary.critic_stats = nnx.split(
    critic, nnx.Param, (SpectralVector, BatchStat)
  )
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  params = nnx.to_pure_dict(params)
  state = adversary.initial(params)
  trainer = trainers.get('ljvae')
  real = g['input/x_shuffle']
  inputs = dict(mel=(real * 50 - 50) / 25)  # raw log-mels whose normalisation is the golden input
  model_of = lambda p: nnx.merge(graphdef, p, rest)
  # A key whose per-scale shuffles are the golden's swap.
  rng = next(
    k
    for k in (jax.random.key(i) for i in range(500))
    if all((np.asarray(p) == [1, 0]).all() for p in began.shuffles(k, 2, 3)[0])
  )
  (_, aux), grads = jax.value_and_grad(
    lambda p: trainer.loss(model_of(p), inputs, rng, 0.1), has_aux=True
  )(params)
  tx = voice_conversion.make_optimizer(config)
  updates, _ = tx.update(grads, tx.init(params), params)
  updated, new, metrics = jax.jit(
    lambda params, updated, state, codes: adversary.update(
      model_of, params, updated, state, codes, jnp.asarray(real), rng
    )
  )(params, optax.apply_updates(params, updates), state, aux['codes'])
  assert_close(metrics['loss_gan'], g['train/loss_gan'], 'loss_gan', 1e-5)
  assert_close(metrics['loss_dis'], g['train/loss_dis'], 'loss_dis', 1e-5)
  assert_close(new['k'], g['train/k'], 'k', 1e-6)
  # The model: its own Adam step, then the decoder's; a decoder weight is compared to 1e-6 where
  # both of its gradients are clear (a first Adam step is about +-lr, whatever the gradient's size).
  golden_grads = {k.removeprefix('grad/'): v for k, v in g.items() if k.startswith('grad/')}
  for k, v in g.items():
    if k.startswith('dec_grad/'):
      name = 'dec.' + k.removeprefix('dec_grad/')
      golden_grads[name] = np.minimum(np.abs(golden_grads.get(name, 0 * v)), np.abs(v))
  stepped = porting.export_state_dict(model_of(updated))
  assert_step_matches(stepped, g, golden_grads)
  # The critic: its Adam step, and u and the running statistics after three calls.
  critic_after = nnx.merge(adversary.graphdef, new['critic'], new['critic_stats'])
  critic_grads = {k.removeprefix('dis_grad/'): v for k, v in g.items() if k.startswith('dis_grad/')}
  for name, value in porting.export_state_dict(critic_after).items():
    expected = g[f'dis_after/{name}']
    if name in critic_grads:
      clear = np.abs(critic_grads[name]) > 1e-5
      np.testing.assert_allclose(value[clear], expected[clear], atol=1e-6, err_msg=name)
      np.testing.assert_allclose(value, expected, atol=2e-3, err_msg=name)
    else:
      assert_close(value, expected, f'critic {name}', 1e-5)


def test_one_time_multi_step(parity_dir, tmp_path):
  """train_time_multi.py's step on vqvc+_multi_codebook_lj (the `time_multi` trainer): per-band mean/std
  from a statistics file, the stretched input, L1 at the three scales + 0.1 x the latent loss, clip to
  3, Adam: the loss, every gradient and the weights after the step."""
  g = load_golden(parity_dir, 'lj/time_multi_step_n64_ch64.npz')
  state_dict = {k.removeprefix('param/'): v for k, v in g.items() if k.startswith('param/')}
  model = porting.load_state_dict(
    VQVCPlusMultiCodebookLJ(
      **VQVCPlusMultiCodebookLJ.sizes_from_torch(state_dict), gru_init='zeros'
    ),
    state_dict,
  )
  stats = tmp_path / 'stats.npz'
  np.savez(stats, mean=g['input/mean'], std=g['input/std'])
  trainer = trainers.get('time_multi', str(stats))
  inputs = dict(mel=g['input/x_raw_shuffle'])
  assert_close(trainer.normalize(inputs['mel']), g['input/x_shuffle'], 'normalised input', 1e-5)
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  params = nnx.to_pure_dict(params)
  _, grads, golden_grads = golden_loss_and_gradients(trainer, graphdef, params, rest, inputs, g)
  assert_adam_step_matches(graphdef, params, rest, grads, g, golden_grads)
