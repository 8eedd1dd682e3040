"""Writes the golden data the parity tests read, from a local clone of the original SkipVQVC.

    pip install -e ".[torch]"
    git clone https://github.com/ericwudayi/SkipVQVC /tmp/SkipVQVC
    python scripts/make_parity_data.py --original=/tmp/SkipVQVC parity/
    SKIPVQVC_PARITY_DIR=parity pytest tests/models/test_parity.py tests/models/test_parity_multi.py \
        tests/models/test_parity_pitch.py tests/models/test_parity_lj.py

The original's models are imported from the clone by path (nothing of theirs is copied here) and run on
CPU in float32 with one thread, with runtime patches only: `.cuda()` is a no-op, the GRU initial state is
zero instead of N(0, 1) noise (`gru_init='zeros'` here), and `vqvc+_rhythm`, whose RCBlock has no
`forward` as published, borrows the one of `model/vqvc+`. For each of the five models of section 2
and the six multi-scale ones (`multi/`), the F0 model (`pitch/`) and the two speaker-free LJSpeech
models (`lj/`), it writes an `.npz` with the keys the tests read:
`param/*` (the initial weights under the original's names), `input/*`, the encoder's intermediates and
codes (captured with hooks on the original's modules), the decoder's outputs for reconstruction, a
speaker-swapped conversion and decoding from codes, and one training step (`train/*`, the raw gradients
`grad/*`, the weights after clip-to-3 and Adam `step1_param/*`) with `torch.randperm` replaced by the
swap. `vqvc+_pitch` also gets its F0 contours: each crop's F0 (our Harvest, `input/f0_hz`) turned into
the decoder's input by `train_pitch_multi.py`'s arithmetic (`input/pitch`), and its trainer's step (no
stretch). `lj/` also gets train_ljvae.py's critic and whole step, and train_time_multi.py's step
(`time_multi_step_n64_ch64.npz`). The inputs are two crops of bundled demo-corpus utterances, so the numbers differ from
`../shared/parity` but test the same things. Features and the MelGAN generator are not covered (they need
melgan-neurips); those tests skip when their files are absent.

`--small` writes the same files from narrower models, small enough to travel with the tests (about 3 MB
for pitch/ and lj/ together, against about 150 MB): every model at 16 channels and 16 codes instead of
64 and 64, and train_ljvae.py's critic at 32 channels where its code hard-codes 512 (`mfd`; a runtime
patch narrows its 1-D body and head, the arithmetic unchanged). The tests read the sizes from the files,
so they pass on either at the same tolerances. `--groups=pitch,lj` writes only those folders.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import sys

import numpy as np

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..')


def _group(cls) -> str:
  """The golden folder of a model class: '' (VQVC+ and its single-scale variants), multi, pitch, lj."""
  if cls.speaker_free:
    return 'lj'
  if cls.takes_f0:
    return 'pitch'
  return 'multi' if cls.multi_scale else ''


def golden_tables() -> dict[str, dict[str, str]]:
  """{group: {golden file stem: the original's model folder}} for every model of the registry (the
  original's folder names are ours): `vqvc+_multi` -> multi/vqvcplus_multi_n64_ch64."""
  sys.path.insert(0, ROOT)
  from skipvqvc_jax import models  # pylint: disable=import-outside-toplevel

  tables = {'': {}, 'multi': {}, 'pitch': {}, 'lj': {}}
  for name in models.names('voice_conversion'):
    stem = 'vqvcplus' + name[len('vqvc+') :] + '_n64_ch64'
    tables[_group(models.get_class(name))][stem] = name
  return tables


# The original's models whose codebooks are an nn.Embedding(max_norm=1) (renormalised in place by a
# lookup): a fact of its code, not of ours (our vqvc+_multi_cav and _codebook_gen renormalise too,
# through their own codebook modules, which hold a bare tensor in the original).
EMBEDDING_MAX_NORM = ('vqvc+_multi', 'vqvc+_multi_simple', 'vqvc+_multi_ps', 'vqvc+_lj3')


def model_class(folder: str):
  from skipvqvc_jax import models  # pylint: disable=import-outside-toplevel

  return models.get_class(folder)


def multi_scale(folder: str) -> bool:
  return model_class(folder).multi_scale


# The models' sizes and the BEGAN critic's width (main() narrows them with --small).
SIZES = dict(channel=64, n_embed=64)
CRITIC_WIDTH = 512  # the original's hard-coded `mfd`
# --small: per folder, sizes at which every compared value stays clear of the tests' tolerances (pitch/
# at 16 codes had a near tie in a code choice; lj/ at 64 codes one Adam update at the edge of 1e-6).
SMALL_SIZES = {'lj': dict(channel=16, n_embed=16)}
SMALL_DEFAULT, SMALL_CRITIC_WIDTH = dict(channel=16, n_embed=64), 32

STRETCH = (0.5, 1.5, 1.25, 0.75)  # per 32-frame segment, segments kept in order
SWAP = [1, 0]


def import_original(clone: str, folder: str):
  """The module model/{folder}/vq_model.py of the clone, imported by path."""
  path = os.path.join(clone, 'model', folder, 'vq_model.py')
  if not os.path.isfile(path):
    raise SystemExit(f'error: {path} not found: --original must be a clone of ericwudayi/SkipVQVC')
  spec = importlib.util.spec_from_file_location(f'original_{folder.replace("+", "plus")}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def load_original(clone: str, folder: str):
  import torch  # pylint: disable=import-outside-toplevel

  torch.Tensor.cuda = lambda self, *a, **k: self
  torch.nn.Module.cuda = lambda self, *a, **k: self
  module = import_original(clone, folder)
  if hasattr(module, 'RCBlock'):
    if 'forward' not in vars(module.RCBlock):
      # vqvc+_rhythm as published: its RCBlock has no forward; the only plausible one is vqvc+'s.
      module.RCBlock.forward = import_original(clone, 'vqvc+').RCBlock.forward
    # The GRU's N(0, 1) initial state -> zeros.
    module.RCBlock.init_hidden = lambda self, batch, hidden: torch.zeros(2, batch, hidden)
  torch.manual_seed(0)
  return module.VC_MODEL(in_channel=80, **SIZES).eval()


DEMO_CROPS = [('awb', slice(16, 144)), ('slt', slice(16, 144))]


def load_netd(clone: str):
  """train_ljvae.py's BEGAN discriminator `NetD(80)`, seeded, in training mode (as it trains). The
  trainer module is imported with its logging helpers and its MelGAN download stubbed out."""
  import types  # pylint: disable=import-outside-toplevel

  import torch  # pylint: disable=import-outside-toplevel

  for folder in ('utils', 'loss'):
    sys.path.insert(0, os.path.join(clone, folder))
  for name in ('logger', 'logger_utils', 'plotting_utils', 'save_and_load'):
    stub = types.ModuleType(name)
    stub.Logger = stub.prepare_directories_and_logger = stub.plot_spectrogram_to_numpy = None
    stub.save_checkpoint = stub.load_checkpoint = None
    sys.modules.setdefault(name, stub)
  hub, torch.hub.load = torch.hub.load, lambda *a, **k: None
  try:
    spec = importlib.util.spec_from_file_location(
      'original_train_ljvae', os.path.join(clone, 'trainer', 'train_ljvae.py')
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
  finally:
    torch.hub.load = hub
  torch.manual_seed(0)
  return _narrowed_netd(module, CRITIC_WIDTH).train()


def _narrowed_netd(module, width: int):
  """The trainer module's `NetD(80)` with `width` channels wherever its code says 512 (its 1-D body and
  head): the same layers and arithmetic, built through a stand-in for `nn` and for its 1-D block."""
  if width == 512:
    return module.NetD(80)
  torch_nn, block = module.nn, module.BNSNConv1dDBlock
  narrow = lambda channels: width if channels == 512 else channels

  class NarrowNn:  # torch.nn, whose Conv1d narrows 512 channels
    def __getattr__(self, name):
      return getattr(torch_nn, name)

    @staticmethod
    def Conv1d(cin, cout, *args, **kwargs):  # pylint: disable=invalid-name
      return torch_nn.Conv1d(narrow(cin), narrow(cout), *args, **kwargs)

  module.nn = NarrowNn()
  module.BNSNConv1dDBlock = lambda cin, cout, *args: block(narrow(cin), narrow(cout), *args)
  try:
    return module.NetD(80)
  finally:
    module.nn, module.BNSNConv1dDBlock = torch_nn, block


def netd_golden(clone: str, x: np.ndarray, y: np.ndarray) -> dict:
  """NetD's initial state, its outputs for three calls in a row (x, y, x: a BEGAN step's fake, real,
  detached fake; each call moves the spectral norms' u on and the running statistics), its state
  after them, and the gradients of mean |D(x) - x| at the first call."""
  import torch  # pylint: disable=import-outside-toplevel

  netd = load_netd(clone)
  out = {f'param/{k}': np32(v) for k, v in netd.state_dict().items() if 'num_batches' not in k}
  out.update({'input/x': x, 'input/y': y})
  tx, ty = torch.from_numpy(x), torch.from_numpy(y)
  first = netd(tx)
  loss = torch.mean(torch.abs(first - tx))
  loss.backward()
  for name, p in netd.named_parameters():
    out[f'grad/{name}'] = np32(p.grad)
  out['out/call0'], out['out/loss0'] = np32(first), np32(loss)
  with torch.no_grad():
    out['out/call1'], out['out/call2'] = np32(netd(ty)), np32(netd(tx))
  out.update(
    {f'after/{k}': np32(v) for k, v in netd.state_dict().items() if 'num_batches' not in k}
  )
  return out


def ljvae_step_golden(clone: str, x_shuffle: np.ndarray) -> dict:
  """One step of train_ljvae.py on vqvc+_multi_codebook_lj with the codes of every scale swapped
  across the batch (SWAP), its three gradients taken at the step's parameters (the script's intent:
  as published it stops on PyTorch >= 1.5), each clipped to 3 and applied by its own Adam: the
  model's (reconstruction + 0.1 latent), the decoder's (0.2 x BEGAN's generator loss), NetD's."""
  import torch  # pylint: disable=import-outside-toplevel

  model, netd = load_original(clone, 'vqvc+_multi_codebook_lj'), load_netd(clone)
  out = {f'param/{k}': np32(v) for k, v in model.state_dict().items()}
  out.update(
    {f'dparam/{k}': np32(v) for k, v in netd.state_dict().items() if 'num_batches' not in k}
  )
  audio = torch.from_numpy(x_shuffle)
  outputs, latent, codes = model(audio)
  targets = [audio[:, :20, ::4], audio[:, :40, ::2], audio]
  recon = sum(torch.nn.functional.l1_loss(o, t) for o, t in zip(outputs, targets))
  fake = model.index_to_decode([c[SWAP] for c in codes])[-1]
  loss_gan = torch.mean(torch.abs(netd(fake) - fake))
  real_d = torch.mean(torch.abs(netd(audio) - audio))
  fake_d = torch.mean(torch.abs(netd(fake.detach()) - fake.detach()))
  k = 0.0
  loss_dis = real_d - k * fake_d
  groups = (
    ('grad', model, recon + 0.1 * latent.mean()),
    ('dec_grad', model.dec, 0.2 * loss_gan),
    ('dis_grad', netd, loss_dis),
  )
  grads = {}
  for key, module, loss in groups:  # every gradient at the step's parameters
    named = [(n, p) for n, p in module.named_parameters()]
    found = torch.autograd.grad(loss, [p for _, p in named], retain_graph=True, allow_unused=True)
    grads[key] = [(n, p, g) for (n, p), g in zip(named, found)]
    out.update({f'{key}/{n}': np32(g) for n, _, g in grads[key] if g is not None})
  for key, module, _ in groups:
    for _, p, g in grads[key]:
      p.grad = g
    out[f'{key}_norm'] = np32(torch.nn.utils.clip_grad_norm_(module.parameters(), 3))
    torch.optim.Adam(module.parameters(), lr=1e-3).step()
  out.update(
    {
      'input/x_shuffle': x_shuffle,
      'train/loss_gan': np32(loss_gan),
      'train/loss_dis': np32(loss_dis),
      'train/k': np.float32(min(max(k + 0.01 * (1.0 * float(real_d) - float(fake_d)), 0.0), 1.0)),
      'train/clip_coef': np.float32(min(1.0, 3 / (float(out['grad_norm']) + 1e-6))),
    }
  )
  _after_step(out, model)
  out.update(
    {f'dis_after/{k}': np32(v) for k, v in netd.state_dict().items() if 'num_batches' not in k}
  )
  return out


def time_multi_step_golden(clone: str, x_logmel: np.ndarray) -> dict:
  """One step of train_time_multi.py on vqvc+_multi_codebook_lj, written as its code is: per-band
  (x - mean) / std (the batch's own statistics standing in for its VCTK files), the segments stretched by
  F.interpolate with the fixed factors, `audio_middile` / `audio_low` by interpolating and keeping 40 /
  20 bands, L1 at the three scales + 0.1 x the latent loss, clip to 3, Adam. (Its second forward, on a
  VCTK batch whose outputs it discards, changes nothing in a model without max-norm codebooks.)"""
  import torch  # pylint: disable=import-outside-toplevel
  from torch.nn import functional as F  # pylint: disable=import-outside-toplevel

  model = load_original(clone, 'vqvc+_multi_codebook_lj')
  out = {f'param/{k}': np32(v) for k, v in model.state_dict().items()}
  mean = x_logmel.mean(axis=(0, 2)).astype(np.float32)
  std = x_logmel.std(axis=(0, 2)).astype(np.float32)
  audio = (torch.from_numpy(x_logmel) - torch.from_numpy(mean)[None, :, None]) / torch.from_numpy(
    std
  )[None, :, None]
  segments = [
    F.interpolate(audio[..., 32 * n : 32 * (n + 1)], scale_factor=f, mode='nearest')
    for n, f in enumerate(STRETCH)
  ]
  audio = torch.cat(segments, dim=2)
  audio = audio[..., : audio.size(2) // 32 * 32]
  middle = F.interpolate(audio, scale_factor=1 / 2)
  middle = middle[:, : middle.size(1) // 2, :]
  low = F.interpolate(middle, scale_factor=1 / 2)
  low = low[:, : low.size(1) // 2, :]
  outputs, latent, _ = model(audio)
  recon = sum(F.l1_loss(o, t) for o, t in zip(outputs, [low, middle, audio]))
  latent = latent.mean()
  loss = recon + 0.1 * latent
  model.zero_grad()
  loss.backward()
  out.update({f'grad/{n}': np32(p.grad) for n, p in model.named_parameters() if p.grad is not None})
  norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 3)
  torch.optim.Adam(model.parameters()).step()
  _after_step(out, model)
  out.update(
    {
      'input/x_logmel': x_logmel,
      'input/x_raw_shuffle': stretched(x_logmel),
      'input/x_shuffle': np32(audio),
      'input/mean': mean,
      'input/std': std,
      'train/loss': np32(loss),
      'train/latent_loss': np32(latent),
      'train/grad_total_norm': np32(norm),
      'train/clip_coef': np.float32(min(1.0, 3 / (float(norm) + 1e-6))),
    }
  )
  return out


def demo_inputs() -> tuple[np.ndarray, np.ndarray]:
  """(2, 80, 128) log-mels: crops of two demo-corpus speakers, made with our feature code; and their
  F0 in Hz per frame (2, 128), from our Harvest (0: unvoiced)."""
  sys.path.insert(0, ROOT)
  from skipvqvc_jax.data import audio, f0  # pylint: disable=import-outside-toplevel

  corpus = os.path.join(ROOT, 'data', 'demo_corpus')
  mels, contours = [], []
  for speaker, crop in DEMO_CROPS:
    y, _ = audio.trim(audio.load(os.path.join(corpus, speaker, f'{speaker}_001.ogg')))
    mels.append(audio.log_mel(y)[:, crop])
    contours.append(f0.f0_per_frame(y)[crop])
  return np.stack(mels).astype(np.float32), np.stack(contours).astype(np.float32)


def pitch_inputs(f0_hz: np.ndarray):
  """train_pitch_multi.py's arithmetic on F0 in Hz: the loader's unvoiced 1 Hz and MIDI numbers
  (librosa.hz_to_midi), then less the batch's voiced mean, + 20, / 50, unvoiced 0; and its three
  frame rates [pitch, pitch_middle, pitch_low] (B, 1, T / k)."""
  import librosa  # pylint: disable=import-outside-toplevel
  import torch  # pylint: disable=import-outside-toplevel
  from torch.nn import functional as F  # pylint: disable=import-outside-toplevel

  pitch = torch.from_numpy(librosa.hz_to_midi(np.where(f0_hz > 0, f0_hz, 1.0))).float()
  voiced, silent = pitch > 20, pitch < 20
  pitch = pitch - torch.sum(pitch * voiced) / torch.sum(voiced)
  pitch = (pitch + 20) / 50
  pitch[silent] = 0.0
  pitch = pitch.unsqueeze(1)
  middle = F.interpolate(pitch, scale_factor=1 / 2)
  return [pitch, middle, F.interpolate(middle, scale_factor=1 / 2)]


def stretched(x: np.ndarray) -> np.ndarray:
  """The trainers' segment stretch with fixed factors: output frame i of a segment stretched by f
  takes frame floor(i * (1 / f)), with 1 / f formed in float32 as torch does."""
  index = np.concatenate(
    [
      32 * n + np.floor(np.arange(int(32 * f)) * np.float32(1 / f)).astype(int)
      for n, f in enumerate(STRETCH)
    ]
  )
  return x[..., index]


class Recorder:
  """Forward hooks on the original's modules: every call's inputs and outputs, in call order."""

  def __init__(self):
    self.calls: dict[str, list] = {}
    self.handles = []

  def watch(self, name, module, pre=False):
    if pre:
      hook = lambda m, args: self.calls.setdefault(name, []).append((args, None))
      self.handles.append(module.register_forward_pre_hook(hook))
    else:
      hook = lambda m, args, out: self.calls.setdefault(name, []).append((args, out))
      self.handles.append(module.register_forward_hook(hook))

  def first(self, name, nth=0):
    return self.calls[name][nth]

  def close(self):
    for h in self.handles:
      h.remove()


def np32(t):
  return t.detach().cpu().numpy().astype(np.float32)


@contextlib.contextmanager
def fixed_randperm(perm):
  import torch  # pylint: disable=import-outside-toplevel

  original = torch.randperm
  torch.randperm = lambda n, *a, **k: torch.tensor(perm[:n])
  try:
    yield
  finally:
    torch.randperm = original


@contextlib.contextmanager
def recorded_randn(store: list, replay: bool):
  """vqvc+_cvae draws its speaker noise with torch.randn: record it once, replay it after."""
  import torch  # pylint: disable=import-outside-toplevel

  original, calls = torch.randn, iter(list(store))

  def randn(*size, **kwargs):
    if replay:
      return next(calls)
    value = original(*size, **kwargs)
    store.append(value)
    return value

  torch.randn = randn
  try:
    yield
  finally:
    torch.randn = original


def encode_call(folder, model, x, x_shuffle):
  if folder in ('vqvc+_rhythm', 'vqvc+_multi_rhythm'):
    return model.encode(x, x_shuffle)
  return model.encode(x)


def decode_call(folder, model, enc, perm=None, pitch=None):
  """The original's decode of an encode result, with the per-item terms permuted by perm (and the
  F0 model's contours, not permuted: the source's)."""
  p = (lambda terms: [t[perm] for t in terms]) if perm is not None else (lambda terms: terms)
  if folder in ('vqvc+_rhythm', 'vqvc+_multi_rhythm'):
    q, sp, std, rhy, _ = enc
    return model.decode(q, p(sp), p(std), p(rhy))
  if folder == 'vqvc+_multi_ps':
    return model.dec(enc[0], p(enc[1]))
  if folder == 'vqvc+_multi_codebook_gen':
    q, content, speaker, _, codes = enc
    if perm is None:
      return model.decode(q)
    swapped = [tuple(t[perm] for t in s) for s in speaker]
    return model.decode(model.change_codebook(content, swapped, codes)[0])
  if folder == 'vqvc+_pitch':
    return model.decode(enc[0], p(enc[1]), p(enc[2]), pitch)
  if model_class(folder).speaker_free:  # no speaker terms: a swap changes nothing
    return model.decode(enc[0])
  return model.decode(enc[0], p(enc[1]), p(enc[2]))


def forward_golden(folder, model, x, x_shuffle, out: dict, noise: list, pitch=None):
  """encode -> decode with hooks; the out/* keys of the tests."""
  import torch  # pylint: disable=import-outside-toplevel

  multi = multi_scale(folder)
  rec = Recorder()
  for s in range(3):
    rec.watch(f'enc{s}', model.enc[s])
    rec.watch(f'q{s}', model.quantize[s])
    if hasattr(model.quantize[s], 'embedding') and isinstance(
      model.quantize[s].embedding, torch.nn.Embedding
    ):
      rec.watch(f'lookup{s}', model.quantize[s].embedding, pre=True)
    for name in ('quantize_speakers', 'gnorm', 'quantize_simple', 'speaker_blocks'):
      if hasattr(model, name):
        rec.watch(f'{name}{s}', getattr(model, name)[s])
    if hasattr(model, 'quantize_speakers'):
      rec.watch(f'splookup{s}', model.quantize_speakers[s].embedding, pre=True)
    if hasattr(model, 'speaker_blocks'):
      rec.watch(f'pool{s}', model.speaker_blocks[s].dense, pre=True)
  with torch.no_grad(), recorded_randn(noise, replay=False):
    enc = encode_call(folder, model, x, x_shuffle)
  rec.close()
  batch = x.shape[0]
  rhythm = folder in ('vqvc+_rhythm', 'vqvc+_multi_rhythm')
  for s in range(3):
    # Each stage runs the content path first, then the rhythm path. Section 2's vqvc+_rhythm file
    # keeps the rhythm path under enc_s (as ../shared/parity does), the multi one the content path.
    out[f'out/enc_s{s}'] = np32(rec.first(f'enc{s}', 1 if folder == 'vqvc+_rhythm' else 0)[1])
    if folder == 'vqvc+_multi_rhythm':
      out[f'out/enc_rhy_s{s}'] = np32(rec.first(f'enc{s}', 1)[1])
    args, result = rec.first(f'q{s}')
    out[f'out/qin_s{s}'] = np32(args[0])
    out[f'out/qdiff_s{s}'] = np32(result[1])
    if f'lookup{s}' in rec.calls:
      codes = rec.first(f'lookup{s}')[0][0]
    else:
      codes = result[2]
    out[f'out/codes_s{s}'] = codes.reshape(batch, -1).numpy().astype(np.int32)
    if folder == 'vqvc+_multi_codebook_gen':
      q, content, speaker, _, _ = enc
      out[f'out/q_s{s}'] = np32(q[s])
      sargs, sresult = rec.first(f'quantize_simple{s}')
      out[f'out/sqin_s{s}'] = np32(sargs[0])
      out[f'out/sqdiff_s{s}'] = np32(sresult[1])
      out[f'out/sq_s{s}'] = np32(content[s])
      weight = model.quantize_simple[s].embedding.weight.detach()
      flat = sargs[0].reshape(-1, weight.shape[1])
      dist = (flat**2).sum(1, keepdim=True) - 2 * flat @ weight.T + (weight**2).sum(1)[None]
      out[f'out/scodes_s{s}'] = dist.argmin(1).reshape(batch, -1).numpy().astype(np.int32)
      for k in (1, 2, 3):
        out[f'out/spk{k}_s{s}'] = np32(speaker[s][k - 1])
      mul, add = speaker[s][2].T, speaker[s][1].T
      book = torch.matmul(model.quantize[s].embedding.detach(), mul)
      book = book / torch.norm(book, dim=1, keepdim=True) + add
      out[f'out/codebook_s{s}'] = np32(book.permute(2, 0, 1))
    elif model_class(folder).speaker_free:
      out[f'out/q_s{s}'] = np32(enc[0][s])
      out[f'out/xnorm_s{s}'] = np32(enc[1][s])  # the normalised frames the next stage reads
    else:
      out[f'out/q_s{s}'] = np32(enc[0][s])
      out[f'out/sp_s{s}'] = np32(enc[1][s])
      if folder != 'vqvc+_multi_ps':
        out[f'out/std_s{s}'] = np32(enc[2][s])
    if rhythm:
      out[f'out/rhy_s{s}'] = np32(enc[3][s])
    if folder == 'vqvc+_speaker_quantize':
      sargs, sresult = rec.first(f'quantize_speakers{s}')
      out[f'out/spqin_s{s}'] = np32(sargs[0])
      out[f'out/spqdiff_s{s}'] = np32(sresult[1])
      out[f'out/sp_codes_s{s}'] = (
        rec.first(f'splookup{s}')[0][0].reshape(batch, 1).numpy().astype(np.int32)
      )
    if folder == 'vqvc+_cvae':
      out[f'input/noise_s{s}'] = np32(noise[s]).reshape(batch, -1)
    if folder == 'vqvc+_multi_ps':
      out[f'out/gn_s{s}'] = np32(rec.first(f'gnorm{s}')[1])
    if (
      hasattr(model, 'speaker_blocks') and not model_class(folder).speaker_free
    ):  # theirs: never called
      out[f'out/spk_pool_s{s}'] = np32(rec.first(f'pool{s}')[0][0])
    if folder == 'vqvc+_multi_cav':
      weight = model.quantize[s].embedding.detach()
      unit = weight / torch.norm(weight, dim=1, keepdim=True)
      chosen = unit[codes.reshape(-1)].reshape(args[0].shape)
      out[f'out/qmse_s{s}'] = np32(((chosen - args[0]) ** 2).mean())
      sq = (unit**2).sum(1, keepdim=True)
      out[f'out/qentropy_s{s}'] = np32(torch.sum(sq - 2 * unit @ unit.T + sq.T))
    if folder in EMBEDDING_MAX_NORM:
      out[f'out/codebook_after_encode_s{s}'] = np32(model.quantize[s].embedding.weight)
  latent_index = {
    'vqvc+_rhythm': 4,
    'vqvc+_multi_rhythm': 4,
    'vqvc+_multi_ps': 2,
    'vqvc+_multi_codebook_gen': 3,
  }.get(folder, 2 if model_class(folder).speaker_free else 3)
  out['out/latent_diff'] = np32(enc[latent_index])
  with torch.no_grad():
    recon = decode_call(folder, model, enc, pitch=pitch)
    converted = decode_call(folder, model, enc, SWAP, pitch=pitch)
  if not multi:
    out['out/recon'], out['out/convert_swap'] = np32(recon), np32(converted)
    return
  for j in range(3):
    out[f'out/recon_d{j}'], out[f'out/convert_swap_d{j}'] = np32(recon[j]), np32(converted[j])
  with torch.no_grad():
    if folder == 'vqvc+_multi_codebook_gen':
      _, content, speaker, _, codes = enc
      swapped = [tuple(t[SWAP] for t in sp) for sp in speaker]
      conv_q, conv_diff, conv_codes = model.change_codebook(content, swapped, codes)
      for s in range(3):
        out[f'out/conv_q_s{s}'] = np32(conv_q[s])
      out['out/conv_latent_diff'] = np32(conv_diff)
      out['out/latent_perm_term'] = np32(sum((enc[0][s] - conv_q[s]).mean() for s in range(3)))
      return
    rows = []
    for s in range(3):
      codes = torch.from_numpy(out[f'out/codes_s{s}']).long()
      table = model.quantize[s].embedding
      if folder == 'vqvc+_multi_cav':
        row = table[codes] / torch.norm(table[codes], dim=-1, keepdim=True)
      else:
        row = table(codes)  # through the embedding: max_norm applies
      row = row.permute(0, 2, 1)
      if folder == 'vqvc+_multi_rhythm':
        row = row - row.mean(1, keepdim=True)
      rows.append(row)
    from_codes = decode_call(folder, model, (rows,) + tuple(enc[1:]), pitch=pitch)
  for j in range(3):
    out[f'out/recon_from_codes_d{j}'] = np32(from_codes[j])


def training_step(folder, model, x, x_shuffle, out: dict, noise: list, pitch=None):
  """One step of the original's trainer arithmetic: train/*, grad/*, step1_param/*."""
  import torch  # pylint: disable=import-outside-toplevel

  multi = multi_scale(folder)
  rhythm = folder in ('vqvc+_rhythm', 'vqvc+_multi_rhythm')
  # The non-rhythm multi trainers replace the input by its stretched copy (not the F0 one's).
  source = x_shuffle if multi and not rhythm and pitch is None else x
  model.zero_grad()
  with fixed_randperm(SWAP), recorded_randn(noise, replay=True):
    if rhythm:
      result = model(x, x_shuffle)
    else:
      result = model(source) if pitch is None else model(source, pitch)
  outputs, latent = result[0], result[1 if model_class(folder).speaker_free else 4].mean()
  if multi:
    targets = [source[:, :20, ::4], source[:, :40, ::2], source]
    terms = [torch.nn.functional.l1_loss(o, t) for o, t in zip(outputs, targets)]
    recon_loss = sum(terms)
    for j, (o, t, term) in enumerate(zip(outputs, targets, terms)):
      out[f'train/target_d{j}'], out[f'train/recon_d{j}'] = np32(t), np32(o)
      out[f'train/recon_loss_d{j}'] = np32(term)
  else:
    recon_loss = torch.nn.functional.l1_loss(outputs, x)
  loss = recon_loss + 0.1 * latent
  if folder in EMBEDDING_MAX_NORM:
    for s in range(3):
      out[f'train/codebook_renormed_s{s}'] = np32(model.quantize[s].embedding.weight)
  loss.backward()
  named = dict(model.named_parameters())
  for name, p in named.items():
    if p.grad is not None:
      out[f'grad/{name}'] = np32(p.grad)
  norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 3)
  out.update(
    {
      'train/loss': np32(loss),
      'train/recon_loss': np32(recon_loss),
      'train/latent_loss': np32(latent),
      'train/grad_total_norm': np32(norm),
      'train/clip_coef': np.float32(min(1.0, 3 / (float(norm) + 1e-6))),
    }
  )
  optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
  optimizer.step()
  _after_step(out, model)


def _after_step(out: dict, model) -> None:
  """step1_param/*: the weights after the step, those it changed (a weight the step left exactly as it
  was, one without a gradient, is its param/* entry: the tests read it there)."""
  for name, value in model.state_dict().items():
    after = np32(value)
    if not np.array_equal(after, out.get(f'param/{name}')):
      out[f'step1_param/{name}'] = after


def make_one(clone: str, folder: str, multi: bool, x_logmel: np.ndarray, f0_hz=None) -> dict:
  import torch  # pylint: disable=import-outside-toplevel

  model = load_original(clone, folder)
  initial = {k: v.clone() for k, v in model.state_dict().items()}
  out = {f'param/{k}': np32(v) for k, v in initial.items()}
  x = (x_logmel * np.float32(25) + np.float32(50)) / np.float32(50) if multi else x_logmel
  x_shuffle = stretched(x)
  out.update({'input/x': x, 'input/x_shuffle': x_shuffle})
  if multi:
    out.update({'input/x_logmel': x_logmel, 'input/swap_perm': np.asarray(SWAP, np.int32)})
  pitch = None
  if folder == 'vqvc+_pitch':
    pitch = pitch_inputs(f0_hz)
    out.update({'input/f0_hz': f0_hz, 'input/pitch': np32(pitch[0][:, 0])})
  noise: list = []
  tensors = torch.from_numpy(x), torch.from_numpy(x_shuffle)
  forward_golden(folder, model, *tensors, out, noise, pitch)
  model.load_state_dict(initial)  # the forward pass renormalised max_norm codebooks in place
  training_step(folder, model, *tensors, out, noise, pitch)
  return out


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--original', required=True, help='a clone of ericwudayi/SkipVQVC')
  parser.add_argument('out', help='folder to write (SKIPVQVC_PARITY_DIR for the tests)')
  parser.add_argument('--small', action='store_true', help='narrower models: files that travel')
  parser.add_argument('--groups', default=',multi,pitch,lj', help='the folders to write')
  args = parser.parse_args(argv)
  global SIZES, CRITIC_WIDTH  # pylint: disable=global-statement
  if args.small:
    CRITIC_WIDTH = SMALL_CRITIC_WIDTH
  groups = args.groups.split(',')
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError:
    print('error: this script runs the original models: pip install -e ".[torch]"', file=sys.stderr)
    return 1
  torch.set_num_threads(1)
  x_logmel, f0_hz = demo_inputs()
  manifests = {'': {}, 'multi': {}, 'pitch': {}, 'lj': {}}
  for group, table in golden_tables().items():
    if group not in groups:
      continue
    if args.small:
      SIZES = SMALL_SIZES.get(group, SMALL_DEFAULT)
    os.makedirs(os.path.join(args.out, group), exist_ok=True)
    for stem, folder in table.items():
      arrays = make_one(args.original, folder, multi_scale(folder), x_logmel, f0_hz)
      path = os.path.join(args.out, group, f'{stem}.npz')
      with open(path + '.tmp', 'wb') as f:
        np.savez_compressed(f, **arrays)
      os.replace(path + '.tmp', path)
      manifests[group][f'{stem}.npz'] = dict(
        keys={k: [list(v.shape), str(v.dtype)] for k, v in arrays.items()},
        meta=dict(
          model=folder,
          torch=torch.__version__,
          swap_perm=SWAP,
          stretch_factors=list(STRETCH),
          loss=float(arrays['train/loss']),
          sizes=SIZES,
        ),
      )
      print(f'{path}: {len(arrays)} arrays, loss {float(arrays["train/loss"]):.6f}', flush=True)
  if 'lj' in groups:
    SIZES = SMALL_SIZES['lj'] if args.small else SIZES
    _write_lj_steps(args.original, args.out, x_logmel, manifests['lj'])
  for group in groups:
    with open(os.path.join(args.out, group, 'manifest.json'), 'w') as f:
      json.dump(dict(files=manifests[group], made_by='scripts/make_parity_data.py'), f, indent=1)
  return 0


def _write_lj_steps(clone: str, out: str, x_logmel: np.ndarray, manifest: dict) -> None:
  """lj/: train_ljvae.py's critic and whole step, train_time_multi.py's step."""
  import torch  # pylint: disable=import-outside-toplevel

  # The BEGAN discriminator of train_ljvae.py, on the simple-normalised demo crops and their stretch.
  x = (x_logmel * np.float32(25) + np.float32(50)) / np.float32(50)
  for name, what, arrays in (
    ('netd_80.npz', 'train_ljvae.NetD(80)', netd_golden(clone, x, stretched(x))),
    (
      'ljvae_step_n64_ch64.npz',
      'vqvc+_multi_codebook_lj + train_ljvae.NetD(80)',
      ljvae_step_golden(clone, stretched(x)),
    ),
    (
      'time_multi_step_n64_ch64.npz',
      'vqvc+_multi_codebook_lj + train_time_multi.py',
      time_multi_step_golden(clone, x_logmel),
    ),
  ):
    path = os.path.join(out, 'lj', name)
    with open(path + '.tmp', 'wb') as f:
      np.savez_compressed(f, **arrays)
    os.replace(path + '.tmp', path)
    manifest[name] = dict(
      keys={k: [list(v.shape), str(v.dtype)] for k, v in arrays.items()},
      meta=dict(model=what, torch=torch.__version__, sizes=SIZES, critic_width=CRITIC_WIDTH),
    )
    print(f'{path}: {len(arrays)} arrays', flush=True)


if __name__ == '__main__':
  raise SystemExit(main())
