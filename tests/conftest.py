import os
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope='session')
def parity_dir() -> pathlib.Path:
  """The original's golden data: ../shared/parity beside the checkout (or $SKIPVQVC_PARITY_DIR)."""
  path = pathlib.Path(os.environ.get('SKIPVQVC_PARITY_DIR', REPO.parent / 'shared' / 'parity'))
  if not (path / 'manifest.json').is_file():
    pytest.skip(f'golden parity data not found at {path} (set SKIPVQVC_PARITY_DIR to its folder)')
  return path
