"""Writing files so that no reader ever sees half of one, and reading the JSON the project writes."""
from __future__ import annotations

import json
import os
import tempfile
from typing import Callable

import numpy as np

from skipvqvc_jax.errors import CorpusError


def atomic_write(path: str, write: Callable[[str], None]) -> None:
  """Writes via a temporary file in the same folder and renames it: no half-written file is visible."""
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix='.' + os.path.basename(path) + '.', suffix='.tmp', dir=folder)
  os.close(fd)
  try:
    write(tmp)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def save_npy(path: str, array: np.ndarray) -> None:
  def write(tmp):
    with open(tmp, 'wb') as f:
      np.save(f, array, allow_pickle=False)
  atomic_write(path, write)


def save_json(path: str, obj) -> None:
  def write(tmp):
    with open(tmp, 'w') as f:
      json.dump(obj, f, indent=1, sort_keys=False)
      f.write('\n')
  atomic_write(path, write)


def save_text(path: str, text: str) -> None:
  def write(tmp):
    with open(tmp, 'w') as f:
      f.write(text)
  atomic_write(path, write)


def load_json(path: str):
  try:
    with open(path) as f:
      return json.load(f)
  except json.JSONDecodeError as e:
    raise CorpusError(f'{path} is not valid JSON ({e.msg} at line {e.lineno}); fix or delete it')
