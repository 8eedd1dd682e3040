"""Porting original state dicts: key checking, layouts, the CLI."""

import subprocess
import sys

import numpy as np
import pytest

from skipvqvc_jax import checkpoints, models, port_torch
from tests.conftest import REPO

SMALL = dict(channel=16, n_embed=16, gru_init='zeros')


def _mel(frames=32):
  return np.random.default_rng(0).normal(-3, 1, (1, 80, frames)).astype(np.float32)


@pytest.fixture(scope='module')
def source():
  """A model with its own random weights, exported under the original's names."""
  model = models.build('vqvc+', seed=7, **SMALL)
  return model, port_torch.export_state_dict(model)


def test_export_then_load_reproduces_the_model(source):
  model, state_dict = source
  assert 'enc.0.0.weight' in state_dict and state_dict['enc.0.0.weight'].shape == (16, 80, 4)
  assert state_dict['dec.blocks.0.block.3.rec.weight_ih_l0'].shape == (48, 16)
  assert state_dict['dec.blocks.0.block.3.conv.weight'].shape == (16, 4, 3)  # groups = 4
  loaded = port_torch.load_state_dict(models.build('vqvc+', seed=1, **SMALL), state_dict)
  np.testing.assert_array_equal(loaded.reconstruct(_mel())[0], model.reconstruct(_mel())[0])


def test_unused_original_modules_are_accepted_and_dropped(source):
  model, state_dict = source
  extra = dict(state_dict, **{'dec.block0.block.0.weight': np.zeros((16, 10, 3), np.float32)})
  loaded = port_torch.load_state_dict(models.build('vqvc+', seed=1, **SMALL), extra)
  np.testing.assert_array_equal(loaded.reconstruct(_mel())[0], model.reconstruct(_mel())[0])
  assert not any(k.startswith('dec.block0.') for k in port_torch.export_state_dict(loaded))


def test_missing_and_unexpected_keys_are_named(source):
  _, state_dict = source
  broken = {k: v for k, v in state_dict.items() if k != 'quantize.1.embedding.weight'}
  broken['enc.3.0.weight'] = np.zeros(1)
  model = models.build('vqvc+', **SMALL)
  before = np.asarray(model.enc[0].conv_in.kernel[...]).copy()
  with pytest.raises(
    port_torch.PortError,
    match=r'missing keys: quantize\.1\.embedding\.weight; '
    r'unexpected keys: enc\.3\.0\.weight',
  ):
    port_torch.load_state_dict(model, broken)
  np.testing.assert_array_equal(model.enc[0].conv_in.kernel[...], before)  # nothing changed


def test_wrong_shapes_are_named(source):
  _, state_dict = source
  with pytest.raises(
    port_torch.PortError, match=r'enc\.0\.0\.weight has shape \(16, 80, 4\), expected \(32, 80, 4\)'
  ):
    port_torch.load_state_dict(models.build('vqvc+', channel=32, n_embed=16), state_dict)


def test_speaker_quantizers_are_required_where_they_are_used():
  model = models.build('vqvc+_speaker_quantize', **SMALL)
  state_dict = port_torch.export_state_dict(model)
  assert 'quantize_speakers.2.embedding.weight' in state_dict
  del state_dict['quantize_speakers.2.embedding.weight']
  with pytest.raises(port_torch.PortError, match='missing keys: quantize_speakers.2'):
    port_torch.load_state_dict(models.build('vqvc+_speaker_quantize', **SMALL), state_dict)


def _port_cli(*args):
  return subprocess.run(
    [sys.executable, '-m', 'skipvqvc_jax.port_torch', *map(str, args)],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=300,
  )


def test_cli_writes_a_model_directory_that_restores_exactly(source, tmp_path):
  model, state_dict = source
  npz = tmp_path / 'original.npz'
  np.savez(npz, **{f'param/{k}': v for k, v in state_dict.items()})
  result = _port_cli(
    npz, tmp_path / 'ported', '--model=vqvc+', '--prefix=param/', '--gru_init=zeros'
  )
  assert result.returncode == 0, result.stderr
  restored = checkpoints.load(str(tmp_path / 'ported'))
  assert (restored.channel, restored.n_embed) == (16, 16)  # read from the weights
  np.testing.assert_array_equal(restored.reconstruct(_mel())[0], model.reconstruct(_mel())[0])
  again = _port_cli(npz, tmp_path / 'ported', '--model=vqvc+', '--prefix=param/')
  assert again.returncode == 1 and 'already exists' in again.stderr


def test_cli_reports_bad_input_in_one_line(tmp_path):
  result = _port_cli(tmp_path / 'nope.pt', tmp_path / 'out', '--model=vqvc+')
  assert result.returncode == 1
  assert result.stderr.strip() == f'error: {tmp_path / "nope.pt"}: no such file'
  np.savez(tmp_path / 'other.npz', x=np.zeros(3))
  result = _port_cli(tmp_path / 'other.npz', tmp_path / 'out', '--model=vqvc+')
  assert result.returncode == 1 and 'not a SkipVQVC state dict' in result.stderr
  assert len(result.stderr.strip().splitlines()) == 1
  assert not (tmp_path / 'out').exists()


def test_cli_reads_original_pt_checkpoints(source, tmp_path):
  torch = pytest.importorskip('torch', reason='reading .pt files needs the optional torch extra')
  model, state_dict = source
  pt = tmp_path / 'gen'
  # The original's save_checkpoint layout.
  torch.save(
    {
      'iteration': 3,
      'state_dict': {k: torch.from_numpy(v) for k, v in state_dict.items()},
      'optimizer': {},
    },
    pt,
  )
  result = _port_cli(pt, tmp_path / 'ported', '--model=vqvc+', '--gru_init=zeros')
  assert result.returncode == 0, result.stderr
  restored = checkpoints.load(str(tmp_path / 'ported'))
  np.testing.assert_array_equal(restored.reconstruct(_mel())[0], model.reconstruct(_mel())[0])
