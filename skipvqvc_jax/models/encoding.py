"""What every VQVC+ model shares: the `Encoding` that `encode` returns, the array-layout conventions,
the size checks, and the rhythm path of the two rhythm variants.

Public arrays use the original's layout: mels (batch, mels, frames), content (batch, channels, frames),
speaker and std (batch, channels, 1). Inside, activations are channel-last (batch, frames, channels).
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from skipvqvc_jax.models.layers import NUM_SCALES


class Encoding(NamedTuple):
  """What `encode` returns. Per-scale lists are finest scale first (the original's encoder order)."""
  content: list  # quantized content, (B, C_s, T_s)
  speaker: list  # speaker embedding, (B, C_s, 1)
  std: list  # time-norm of the centred encoder output, (B, C_s, 1)
  latent_loss: jax.Array  # scalar: quantizer commitment terms (+ variant terms)
  codes: list  # content codebook index per frame, (B, T_s) int32
  encoder_out: list  # raw encoder stage output, (B, C_s, T_s)
  quantizer_in: list  # the normalised frames fed to the content quantizer, (B, T_s, C_s)
  content_losses: list  # each content quantizer's commitment term, scalars
  rhythm: list | None = None  # vqvc+_rhythm: channel-mean of the rhythm path, (B, 1, T_s)
  extras: dict | None = None  # variant-specific diagnostics (see each variant)


def check_sizes(in_channel: int, gru_init: str) -> None:
  if gru_init not in ('normal', 'zeros'):
    raise ValueError(f"gru_init must be 'normal' or 'zeros', got {gru_init!r}")
  if in_channel % 2 ** (NUM_SCALES + 1):
    raise ValueError(f'in_channel must be a multiple of {2 ** (NUM_SCALES + 1)} '
                     f'(GroupNorm needs 4 groups at the coarsest scale); got {in_channel}')


def to_public(x):
  """(B, T, C) <-> (B, C, T); the same swap converts both ways."""
  return jnp.swapaxes(x, 1, 2)


def l2norm(x, axis):
  return jnp.linalg.norm(x, axis=axis, keepdims=True)


def match_batch(*per_scale_lists, batch: int):
  """Broadcasts per-scale arrays with batch 1 to `batch`; other batch sizes must already match."""
  def fit(a):
    if a.shape[0] == batch:
      return a
    if a.shape[0] == 1:
      return jnp.broadcast_to(a, (batch,) + a.shape[1:])
    raise ValueError(f'target batch {a.shape[0]} must be 1 or match the source batch {batch}')
  return tuple([fit(a) for a in lst] for lst in per_scale_lists)


def rhythm_stage_input(j: int, q, sp, std, rhythm):
  """The rhythm models' decoder input: content * std + speaker, plus rhythm at the coarsest scale."""
  z = q * std + sp
  return z + rhythm if j == 0 else z


def check_rhythm_inputs(model, mel, content_mel):
  """`content_mel` (default: `mel`), after checking both for a rhythm model."""
  content_mel = mel if content_mel is None else content_mel
  model.check_mel(mel)
  model.check_mel(content_mel, 'content_mel')
  if content_mel.shape != mel.shape:
    raise ValueError(f'{model.name}: mel {tuple(mel.shape)} and content_mel '
                     f'{tuple(content_mel.shape)} must have the same shape')
  return content_mel


def rhythm_path(model, mel) -> tuple[list, list]:
  """`mel` through the model's encoder: (the channel-mean per stage (B, T_s, 1) channel-last, the
  stages' outputs (B, C_s, T_s))."""
  rhythm, encoder_out, x = [], [], to_public(jnp.asarray(mel))
  for s in range(NUM_SCALES):
    x = model.enc[s](x)
    encoder_out.append(to_public(x))
    rhythm.append(jnp.mean(x, axis=-1, keepdims=True))
  return rhythm, encoder_out
