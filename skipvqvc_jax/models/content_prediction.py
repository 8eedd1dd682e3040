"""Contrastive prediction of the content codes (VQ-CPC, as VQMIVC trains its content encoder): a
training-only head, off in the original's models.

A causal context of the finest scale's quantized content up to frame t predicts the content of frame
t + k for k = 1..steps (one linear head each), scored against every frame of the same utterance
(InfoNCE: a softmax over the utterance's frames, the true frame the label). Codes that can be
predicted from their past carry the slowly changing phonetic content; the speaker, constant over an
utterance, does not help to tell its frames apart. Conversion never calls it; porting drops it.
"""

from __future__ import annotations

import jax.numpy as jnp
import optax
from flax import nnx

from skipvqvc_jax.models.layers import Conv1d, leaky_relu, linear

CONTEXT_KERNEL = 4  # frames each causal conv sees: two of them, a context of 7 frames


class ContentPredictor(nnx.Module):
  """Causal conv context (width -> hidden -> hidden) and `steps` linear heads (hidden -> width)."""

  def __init__(self, width: int, hidden: int, steps: int, rngs: nnx.Rngs):
    self.context_in = Conv1d(width, hidden, CONTEXT_KERNEL, rngs=rngs)
    self.context_out = Conv1d(hidden, hidden, CONTEXT_KERNEL, rngs=rngs)
    self.heads = nnx.List([linear(hidden, width, rngs) for _ in range(steps)])

  def context(self, z):
    """z (B, T, width), channel-last -> (B, T, hidden); frame t sees frames t-6..t only."""
    causal = lambda x: jnp.pad(x, ((0, 0), (CONTEXT_KERNEL - 1, 0), (0, 0)))
    return self.context_out(causal(leaky_relu(self.context_in(causal(z)))))

  def loss(self, z):
    """The InfoNCE loss of z (B, T, width), averaged over the steps ahead and the frames."""
    context, frames = self.context(z), z.shape[1]
    losses = []
    for k, head in enumerate(self.heads, 1):
      predicted = head(context[:, : frames - k])  # (B, T - k, width)
      logits = jnp.einsum('btw,bsw->bts', predicted, z).astype(jnp.float32)
      labels = jnp.broadcast_to(jnp.arange(k, frames), logits.shape[:2])
      losses.append(jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels)))
    return sum(losses) / len(losses)
