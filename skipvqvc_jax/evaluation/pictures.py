"""Pictures for notebooks and the report: several log-mels one above the other (a source, its
reconstruction, a conversion, a decoding of edited codes), as RGB arrays or PNG files."""

from __future__ import annotations

import numpy as np

from skipvqvc_jax.core.fileio import atomic_write
from skipvqvc_jax.store import summaries


def mels(named: dict[str, np.ndarray], title: str = '', path: str | None = None) -> np.ndarray:
  """One picture of the log-mels in `named` ({label: (bands, frames)}; a multi-scale model's list of
  outputs gives its last), one row each with a shared colour scale, low bands at the bottom; also
  written to `path` as PNG when given. Returns the RGB uint8 (H, W, 3) picture."""
  import matplotlib  # pylint: disable=import-outside-toplevel

  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=import-outside-toplevel

  arrays = {k: np.asarray(v[-1] if isinstance(v, list | tuple) else v) for k, v in named.items()}
  low = min(float(a.min()) for a in arrays.values())
  high = max(float(a.max()) for a in arrays.values())
  fig, axes = plt.subplots(len(arrays), 1, figsize=(8, 2.2 * len(arrays)), dpi=80, squeeze=False)
  for ax, (label, mel) in zip(axes[:, 0], arrays.items()):
    im = ax.imshow(mel, aspect='auto', origin='lower', interpolation='none', cmap='magma')
    im.set_clim(low, high)
    ax.set(ylabel='mel band', title=f'{title} {label}'.strip())
  axes[-1, 0].set(xlabel='frame')
  image = summaries.figure_rgb(fig)
  if path:
    save_png(path, image)
  return image


def save_png(path: str, image: np.ndarray) -> None:
  """An RGB array as a PNG file, written whole or not at all."""
  from matplotlib import pyplot as plt  # pylint: disable=import-outside-toplevel

  atomic_write(path, lambda tmp: plt.imsave(tmp, image, format='png'))
