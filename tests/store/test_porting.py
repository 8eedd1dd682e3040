"""Porting original state dicts: key checking, layouts, the CLI."""

import json
import sys

import numpy as np
import pytest

from skipvqvc_jax import models
from skipvqvc_jax.core import errors
from skipvqvc_jax.data import audio
from skipvqvc_jax.inference import convert, model_dirs
from skipvqvc_jax.store import checkpoints, porting, torch_files
from tests.conftest import REPO, run_in_repo
from tests.store.test_torch_files import _crafted

SMALL = dict(channel=16, n_embed=16, gru_init='zeros')


def _mel(frames=32):
  return np.random.default_rng(0).normal(-3, 1, (1, 80, frames)).astype(np.float32)


@pytest.fixture(scope='module')
def source():
  """A model with its own random weights, exported under the original's names."""
  model = models.build('vqvc+', seed=7, **SMALL)
  return model, porting.export_state_dict(model)


def test_export_then_load_reproduces_the_model(source):
  model, state_dict = source
  assert 'enc.0.0.weight' in state_dict and state_dict['enc.0.0.weight'].shape == (16, 80, 4)
  assert state_dict['dec.blocks.0.block.3.rec.weight_ih_l0'].shape == (48, 16)
  assert state_dict['dec.blocks.0.block.3.conv.weight'].shape == (16, 4, 3)  # groups = 4
  loaded = porting.load_state_dict(models.build('vqvc+', seed=1, **SMALL), state_dict)
  np.testing.assert_array_equal(loaded.reconstruct(_mel())[0], model.reconstruct(_mel())[0])


def test_unused_original_modules_are_accepted_and_dropped(source):
  model, state_dict = source
  extra = dict(state_dict, **{'dec.block0.block.0.weight': np.zeros((16, 10, 3), np.float32)})
  loaded = porting.load_state_dict(models.build('vqvc+', seed=1, **SMALL), extra)
  np.testing.assert_array_equal(loaded.reconstruct(_mel())[0], model.reconstruct(_mel())[0])
  assert not any(k.startswith('dec.block0.') for k in porting.export_state_dict(loaded))


def test_missing_and_unexpected_keys_are_named(source):
  _, state_dict = source
  broken = {k: v for k, v in state_dict.items() if k != 'quantize.1.embedding.weight'}
  broken['enc.3.0.weight'] = np.zeros(1)
  model = models.build('vqvc+', **SMALL)
  before = np.asarray(model.enc[0].conv_in.kernel[...]).copy()
  with pytest.raises(
    porting.PortError,
    match=r'missing keys: quantize\.1\.embedding\.weight; '
    r'unexpected keys: enc\.3\.0\.weight',
  ):
    porting.load_state_dict(model, broken)
  np.testing.assert_array_equal(model.enc[0].conv_in.kernel[...], before)  # nothing changed


def test_wrong_shapes_are_named(source):
  _, state_dict = source
  with pytest.raises(
    porting.PortError, match=r'enc\.0\.0\.weight has shape \(16, 80, 4\), expected \(32, 80, 4\)'
  ):
    porting.load_state_dict(models.build('vqvc+', channel=32, n_embed=16), state_dict)


def test_speaker_quantizers_are_required_where_they_are_used():
  model = models.build('vqvc+_speaker_quantize', **SMALL)
  state_dict = porting.export_state_dict(model)
  assert 'quantize_speakers.2.embedding.weight' in state_dict
  del state_dict['quantize_speakers.2.embedding.weight']
  with pytest.raises(porting.PortError, match='missing keys: quantize_speakers.2'):
    porting.load_state_dict(models.build('vqvc+_speaker_quantize', **SMALL), state_dict)


def _port_cli(*args):
  return run_in_repo(
    [sys.executable, '-m', 'skipvqvc_jax.apps.port', *map(str, args)],
    timeout=300,
  )


def _write_original(path, state_dict):
  """The original's save_checkpoint: {'iteration', 'state_dict', 'optimizer'} in a .pt (torch's zip
  format, written without torch), at `path` (the original names the file `gen`)."""
  path.parent.mkdir(parents=True, exist_ok=True)
  optimizer = {'state': {0: {'step': 3, 'exp_avg': np.ones(2, np.float32)}}, 'param_groups': []}
  path.write_bytes(
    torch_files.dumps({'iteration': 3, 'state_dict': state_dict, 'optimizer': optimizer})
  )
  return path


def test_cli_writes_a_model_directory_that_restores_exactly(source, tmp_path):
  model, state_dict = source
  npz = tmp_path / 'original.npz'
  np.savez(npz, **{f'param/{k}': v for k, v in state_dict.items()})
  flags = [f'--checkpoint={npz}', f'--output={tmp_path / "ported"}', '--architecture=vqvc+']
  result = _port_cli(*flags, '--prefix=param/', '--gru_init=zeros', '--trainer=normal')
  assert result.returncode == 0, result.stderr
  assert json.loads(result.stdout)['trainer'] == 'normal'
  # What it wrote on stdout (one JSON line), and on stderr only the command to use it next.
  assert result.stderr.startswith('next: convert with skipvqvc-convert')
  assert len(result.stderr.splitlines()) == 1
  restored = checkpoints.load(str(tmp_path / 'ported'))
  assert (restored.channel, restored.n_embed) == (16, 16)  # read from the weights
  np.testing.assert_array_equal(restored.reconstruct(_mel())[0], model.reconstruct(_mel())[0])
  again = _port_cli(*flags, '--prefix=param/', '--trainer=normal')
  assert again.returncode == 1 and 'already exists' in again.stderr


def test_cli_reports_bad_input_in_one_line(source, tmp_path):
  out = tmp_path / 'out'
  result = _port_cli(
    f'--checkpoint={tmp_path / "nope.pt"}', f'--output={out}', '--architecture=vqvc+'
  )
  assert result.returncode == 1
  assert result.stderr.strip() == f'error: {tmp_path / "nope.pt"}: no such file'
  np.savez(tmp_path / 'other.npz', x=np.zeros(3))
  result = _port_cli(
    f'--checkpoint={tmp_path / "other.npz"}', f'--output={out}', '--architecture=vqvc+'
  )
  assert result.returncode == 1 and 'not a SkipVQVC state dict' in result.stderr
  assert len(result.stderr.strip().splitlines()) == 1
  # The 413-byte file that once segfaulted the port: a view far past its 4-element storage.
  hostile = tmp_path / 'hostile.pt'
  hostile.write_bytes(_crafted(np.arange(4), 0, (4, 1 << 20), (1 << 20, 1)))
  result = _port_cli(f'--checkpoint={hostile}', f'--output={out}', '--architecture=vqvc+')
  assert result.returncode == 1, result.stderr
  assert result.stderr.startswith(f'error: {hostile} has a tensor of size (4, 1048576)')
  assert len(result.stderr.strip().splitlines()) == 1
  # Where the path does not name the trainer, the user is asked for it (the ones that fit).
  pt = _write_original(tmp_path / 'mine' / 'model.pt', source[1])
  result = _port_cli(f'--checkpoint={pt}', f'--output={out}', '--architecture=vqvc+')
  assert result.returncode == 1
  assert 'which trainer trained it?' in result.stderr and 'simple_normalize,' in result.stderr
  assert 'multi' not in result.stderr.split('one of')[1].split('(')[0]  # single-scale ones only
  result = _port_cli(
    f'--checkpoint={pt}', f'--output={out}', '--architecture=vqvc+', '--trainer=mean_std'
  )
  assert result.returncode == 1 and 'give --stats=stats.npz' in result.stderr
  result = _port_cli(
    f'--checkpoint={pt}', f'--output={out}', '--architecture=vqvc+', '--trainer=multi'
  )
  assert result.returncode == 1 and 'cannot train vqvc+' in result.stderr
  assert not out.exists()


def test_cli_reads_the_originals_checkpoint_and_its_path(source, tmp_path):
  """checkpoint/{model}_n{n}_ch{ch}_{trainer}/gen: model and trainer from the path, no flags."""
  model, state_dict = source
  pt = _write_original(
    tmp_path / 'checkpoint' / 'vqvc+_n16_ch16_simple_normalize' / 'gen', state_dict
  )
  result = _port_cli(f'--checkpoint={pt}', f'--output={tmp_path / "ported"}', '--gru_init=zeros')
  assert result.returncode == 0, result.stderr
  assert json.loads(result.stdout)['trainer'] == 'simple_normalize'
  assert (
    result.stderr.strip()
    .splitlines()[-1]
    .startswith(f'next: convert with skipvqvc-convert --model={tmp_path / "ported"} --source=')
  )
  info = checkpoints.read_model_info(str(tmp_path / 'ported'))
  assert info.conversion['trainer'] == 'simple_normalize'
  assert info.conversion['features']['n_mels'] == 80 and info.conversion['mel_output'] == -1
  restored = checkpoints.load(str(tmp_path / 'ported'))
  np.testing.assert_array_equal(restored.reconstruct(_mel())[0], model.reconstruct(_mel())[0])


def test_mean_std_statistics_travel_with_the_model(source, tmp_path):
  """The original's mean.mel.melgan.npy / std.mel.melgan.npy become the model directory's stats.npz,
  and conversion normalises with them."""
  model, state_dict = source
  rng = np.random.default_rng(1)
  mean, std = rng.normal(-4, 1, 80).astype(np.float32), rng.uniform(0.5, 2, 80).astype(np.float32)
  np.save(tmp_path / 'mean.mel.melgan.npy', mean)
  np.save(tmp_path / 'std.mel.melgan.npy', std)
  pt = _write_original(tmp_path / 'checkpoint' / 'vqvc+_n16_ch16_mean_std' / 'gen', state_dict)
  stats = f'--stats={tmp_path / "mean.mel.melgan.npy"},{tmp_path / "std.mel.melgan.npy"}'
  out = tmp_path / 'ported'
  result = _port_cli(f'--checkpoint={pt}', f'--output={out}', '--gru_init=zeros', stats)
  assert result.returncode == 0, result.stderr
  with np.load(out / 'stats.npz') as saved:
    np.testing.assert_array_equal(saved['mean'], mean)
    np.testing.assert_array_equal(saved['std'], std)
  converter = convert.Converter.restore(str(out))
  raw = _mel(32)[0]
  expected = model.reconstruct(((raw - mean[:, None]) / std[:, None] / 3)[None])[0][-1][0]
  recon, _ = converter.reconstruct_mel(raw)
  np.testing.assert_allclose(
    recon, np.asarray(expected) * std[:, None] * 3 + mean[:, None], atol=1e-4
  )


ORIGINAL_TRAINER = {  # a trainer of the original's that trains each golden model
  'vqvc+': 'normal',
  'vqvc+_rhythm': 'rhythm',
  'vqvc+_resample': 'normal',
  'vqvc+_speaker_quantize': 'normal',
  'vqvc+_cvae': 'normal',
  'vqvc+_multi': 'simple_normalize_multi',
  'vqvc+_multi_simple': 'simple_normalize_multi',
  'vqvc+_multi_rhythm': 'simple_normalize_multi_rhythm',
  'vqvc+_multi_ps': 'simple_normalize_multi',
  'vqvc+_multi_cav': 'simple_normalize_multi',
  'vqvc+_multi_codebook_gen': 'simple_normalize_multi',
}


@pytest.mark.parametrize('name', list(ORIGINAL_TRAINER))
def test_every_model_of_the_original_ports_into_a_model_directory(name, parity_dir, tmp_path):
  """The golden weights of each of the eleven models in the original's checkpoint layout ->
  port_original -> a model directory whose parameters are the original's, with its trainer."""
  from tests.models.test_parity import GOLDEN
  from tests.models.test_parity_multi import GOLDEN as GOLDEN_MULTI

  file = parity_dir / GOLDEN[name] if name in GOLDEN else parity_dir / 'multi' / GOLDEN_MULTI[name]
  with np.load(file) as g:
    state_dict = {k.removeprefix('param/'): g[k] for k in g.files if k.startswith('param/')}
  trainer = ORIGINAL_TRAINER[name]
  pt = _write_original(tmp_path / 'checkpoint' / f'{name}_n64_ch64_{trainer}' / 'gen', state_dict)
  written = model_dirs.port_original(str(pt), str(tmp_path / 'ported'), gru_init='zeros')
  assert (written['model'], written['trainer'], written['channel']) == (name, trainer, 64)
  settings, _ = convert.read_settings(str(tmp_path / 'ported'))
  assert settings.trainer == trainer
  exported = porting.export_state_dict(checkpoints.load(str(tmp_path / 'ported')))
  assert exported and set(exported) <= set(state_dict)
  for key, value in exported.items():
    np.testing.assert_array_equal(value, state_dict[key], err_msg=key)


def test_a_golden_checkpoint_converts_through_the_cli_as_the_original(parity_dir, tmp_path):
  """The original's vqvc+ weights as its .pt -> skipvqvc-port -> skipvqvc-convert: the mel of
  the original's forward pass (golden `convert_swap`: item 0's content in item 1's voice)."""
  with np.load(parity_dir / 'vqvcplus_n64_ch64.npz') as g:
    state_dict = {k.removeprefix('param/'): g[k] for k in g.files if k.startswith('param/')}
    x, expected = g['input/x'], g['out/convert_swap']
  pt = _write_original(tmp_path / 'checkpoint' / 'vqvc+_n64_ch64_train_normal' / 'gen', state_dict)
  result = _port_cli(f'--checkpoint={pt}', f'--output={tmp_path / "model"}', '--gru_init=zeros')
  assert result.returncode == 0, result.stderr
  np.save(tmp_path / 'source.npy', x[0])
  np.save(tmp_path / 'target.npy', x[1])
  converted = run_in_repo(
    [
      sys.executable,
      'main.py',
      '--mode=convert',
      f'--model={tmp_path / "model"}',
      f'--source={tmp_path / "source.npy"}',
      f'--target={tmp_path / "target.npy"}',
      f'--output={tmp_path / "out.npy"}',
      '--output_mel',
      '--nocompilation_cache',
    ],
    timeout=300,
  )
  assert converted.returncode == 0, converted.stderr[-2000:]
  np.testing.assert_allclose(np.load(tmp_path / 'out.npy'), expected[0], atol=1e-4)
  # The same directory from Python, with two recordings: audio of the source's (trimmed) length.
  import skipvqvc_jax

  source = REPO / 'data' / 'demo_corpus' / 'awb' / 'awb_005.ogg'
  wave = skipvqvc_jax.load(tmp_path / 'model').convert(
    source, REPO / 'data' / 'demo_corpus' / 'slt' / 'slt_001.ogg'
  )
  frames = audio.file_to_log_mel(str(source))[0].shape[1]
  assert wave.ndim == 1 and np.isfinite(wave).all() and abs(len(wave) - frames * 256) <= 256


def test_a_model_directory_without_conversion_settings_is_named(source, tmp_path):
  model, _ = source
  checkpoints.save_model(str(tmp_path / 'old'), model)  # as skipvqvc_jax 0.2 ported
  with pytest.raises(errors.ConversionError, match='without conversion settings .* --trainer'):
    convert.Converter.restore(str(tmp_path / 'old'))
