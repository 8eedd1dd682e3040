"""Alternatives for the decoder's bidirectional GRU, timed forward + backward on this machine.

    python benchmarks/gru.py [--channels=64,512] [--frames=16,64,128] [--batch=8]

The nine GRUs of the decoder run over T/8, T/4 and T/2 frames at each of three scales; they are the
sequential part of the step. Variants:
  ours            one scan per direction, with a custom gradient whose backward scan carries only dh
                  and computes the hidden-weight gradient as one matmul over all steps
  fused-custom    the same gradient, both directions in one scan
  fused-scan      input projections of all frames in one matmul, both directions in one scan
  fused-unroll-N  the same scan unrolled N steps per loop iteration
  two-scans       input projections up front, one scan per direction
  naive           one scan per direction with the input matmul inside the scan body
"""

import argparse
import functools

import jax
import jax.numpy as jnp
import numpy as np
from common import median_seconds

from skipvqvc_jax.models import layers  # pylint: disable=wrong-import-position


def _cell(gx, h, w_hh, b_hh):
  gh = h @ w_hh + b_hh
  xr, xz, xn = jnp.split(gx, 3, axis=-1)
  hr, hz, hn = jnp.split(gh, 3, axis=-1)
  r, z = jax.nn.sigmoid(xr + hr), jax.nn.sigmoid(xz + hz)
  n = jnp.tanh(xn + r * hn)
  return (1 - z) * n + z * h


def fused(x, p, unroll=1):
  w_ih, w_hh, b_ih, b_hh = p
  xs = jnp.stack([x, x[:, ::-1]]).swapaxes(1, 2)
  gates = jnp.einsum('dtbf,dfg->tdbg', xs, w_ih) + b_ih[None, :, None]

  def step(h, gx):
    gh = jnp.einsum('dbf,dfg->dbg', h, w_hh) + b_hh[:, None]
    xr, xz, xn = jnp.split(gx, 3, axis=-1)
    hr, hz, hn = jnp.split(gh, 3, axis=-1)
    r, z = jax.nn.sigmoid(xr + hr), jax.nn.sigmoid(xz + hz)
    h = (1 - z) * jnp.tanh(xn + r * hn) + z * h
    return h, h

  h0 = jnp.zeros((2, x.shape[0], x.shape[2]))
  _, hs = jax.lax.scan(step, h0, gates, unroll=unroll)
  return (hs[:, 0] + hs[::-1, 1]).swapaxes(0, 1)


def ours(x, p):
  """skipvqvc_jax.models.layers: one scan per direction, custom gradient."""
  w_ih, w_hh, b_ih, b_hh = p
  out = []
  for d, seq in enumerate((x, x[:, ::-1])):
    gates = (seq @ w_ih[d] + b_ih[d]).swapaxes(0, 1)
    out.append(layers.gru_scan(gates, jnp.zeros((x.shape[0], x.shape[2])), w_hh[d], b_hh[d]))
  return (out[0] + out[1][::-1]).swapaxes(0, 1)


def _fused_step_custom(gx, h0, w_hh, b_hh):
  """A custom-gradient scan over both directions at once (the runner-up)."""
  return jax.vmap(layers.gru_scan, in_axes=(1, 0, 0, 0), out_axes=1)(gx, h0, w_hh, b_hh)


def fused_custom(x, p):
  w_ih, w_hh, b_ih, b_hh = p
  xs = jnp.stack([x, x[:, ::-1]]).swapaxes(1, 2)
  gates = jnp.einsum('dtbf,dfg->tdbg', xs, w_ih) + b_ih[None, :, None]
  hs = _fused_step_custom(gates, jnp.zeros((2, x.shape[0], x.shape[2])), w_hh, b_hh)
  return (hs[:, 0] + hs[::-1, 1]).swapaxes(0, 1)


def two_scans(x, p):
  w_ih, w_hh, b_ih, b_hh = p
  out = []
  for d, seq in enumerate((x, x[:, ::-1])):
    gates = (seq @ w_ih[d] + b_ih[d]).swapaxes(0, 1)
    step = lambda h, gx, d=d: (lambda h2: (h2, h2))(_cell(gx, h, w_hh[d], b_hh[d]))
    _, hs = jax.lax.scan(step, jnp.zeros((x.shape[0], x.shape[2])), gates)
    out.append(hs if d == 0 else hs[::-1])
  return (out[0] + out[1]).swapaxes(0, 1)


def naive(x, p):
  w_ih, w_hh, b_ih, b_hh = p
  out = []
  for d, seq in enumerate((x, x[:, ::-1])):
    step = lambda h, xt, d=d: (lambda h2: (h2, h2))(
      _cell(xt @ w_ih[d] + b_ih[d], h, w_hh[d], b_hh[d])
    )
    _, hs = jax.lax.scan(step, jnp.zeros((x.shape[0], x.shape[2])), seq.swapaxes(0, 1))
    out.append(hs if d == 0 else hs[::-1])
  return (out[0] + out[1]).swapaxes(0, 1)


def timed(fn, *args, repeat=30):
  """The median seconds of `fn(*args)`, waited for (JAX returns before the device is done)."""
  return median_seconds(lambda: jax.block_until_ready(fn(*args)), repeat)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--channels', default='64,512')
  parser.add_argument('--frames', default='16,64,128')
  parser.add_argument('--batch', type=int, default=8)
  args = parser.parse_args()
  variants = {
    'ours': ours,
    'fused-custom': fused_custom,
    'fused-scan': fused,
    'fused-unroll-2': functools.partial(fused, unroll=2),
    'fused-unroll-4': functools.partial(fused, unroll=4),
    'fused-unroll-8': functools.partial(fused, unroll=8),
    'two-scans': two_scans,
    'naive': naive,
  }
  print(
    f'forward + backward of one bidirectional GRU, batch {args.batch}, median ms '
    f'({jax.devices()[0].device_kind})'
  )
  print(f'{"channels":>8} {"frames":>6} ' + ' '.join(f'{v:>15}' for v in variants))
  rng = np.random.default_rng(0)
  for c in map(int, args.channels.split(',')):
    params = tuple(
      jnp.asarray(rng.normal(0, 0.1, s), jnp.float32)
      for s in ((2, c, 3 * c), (2, c, 3 * c), (2, 3 * c), (2, 3 * c))
    )
    for t in map(int, args.frames.split(',')):
      x = jnp.asarray(rng.normal(0, 1, (args.batch, t, c)), jnp.float32)
      row = []
      for fn in variants.values():
        loss = lambda p, x, fn=fn: jnp.sum(fn(x, p) ** 2)
        row.append(timed(jax.jit(jax.grad(loss)), params, x) * 1e3)
      print(f'{c:>8} {t:>6} ' + ' '.join(f'{ms:>15.3f}' for ms in row), flush=True)
  print('forward only, batch 1 (inference), median ms')
  for c in map(int, args.channels.split(',')):
    params = tuple(
      jnp.asarray(rng.normal(0, 0.1, s), jnp.float32)
      for s in ((2, c, 3 * c), (2, c, 3 * c), (2, 3 * c), (2, 3 * c))
    )
    x = jnp.asarray(rng.normal(0, 1, (1, 512, c)), jnp.float32)
    row = [timed(jax.jit(fn), x, params, repeat=10) * 1e3 for fn in variants.values()]
    print(f'{c:>8} {512:>6} ' + ' '.join(f'{ms:>15.3f}' for ms in row), flush=True)


if __name__ == '__main__':
  main()
