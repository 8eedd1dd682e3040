"""The multi-scale family in our one loop and in the notebooks' workflows, on real features:
training (all three multi trainers), exact resume with the in-place codebook renormalisation, the
per-scale images in TensorBoard and the eval report, one-shot conversion from a checkpoint trained here
and from a ported original checkpoint, reconstruction and decoding from edited codes."""

import json
import sys

import numpy as np
import pytest
import soundfile as sf

from skipvqvc_jax.core import errors
from skipvqvc_jax.data import feature_files
from skipvqvc_jax.evaluation import evaluate
from skipvqvc_jax.inference import convert
from skipvqvc_jax.store import checkpoints, porting
from skipvqvc_jax.training import loop
from skipvqvc_jax.training.tasks import voice_conversion
from tests.conftest import REPO, devices_env, main_flags, read_events, run_in_repo, tiny_config

PRESET = 'vqvc_plus_multi.py:tiny'
DEMO = REPO / 'data' / 'demo_corpus'


def _codebook_norms(workdir):
  model = checkpoints.load(str(workdir))
  return [np.linalg.norm(np.asarray(q.embedding[...]), axis=1) for q in model.quantize]


@pytest.fixture(scope='module')
def straight(small_features, tmp_path_factory):
  workdir = tmp_path_factory.mktemp('multi')
  config = tiny_config(small_features, PRESET, eval_every_steps=8)
  return workdir, loop.train_and_evaluate(config, str(workdir))


def test_trains_with_one_compile_and_the_loss_falls(straight):
  _, summary = straight
  losses = [summary['train_losses'][s] for s in sorted(summary['train_losses'])]
  assert len(losses) == 8 and all(np.isfinite(losses))
  assert np.mean(losses[-3:]) < 0.9 * np.mean(losses[:2])
  assert summary['compiles'] == 1  # stretched 32-frame crops all fall in one length bucket


def test_used_codebook_rows_are_renormalised_in_the_checkpoint(straight):
  """max_norm renormalises the rows a lookup uses (N(0,1) rows of 40 dims have norm ~6): Adam then
  moves them by at most ~lr per element from norm 1."""
  workdir, _ = straight
  norms = _codebook_norms(workdir)
  fresh = voice_conversion.build_model(checkpoints.read_config(str(workdir)))
  initial = [np.linalg.norm(np.asarray(q.embedding[...]), axis=1) for q in fresh.quantize]
  for s, (now, before) in enumerate(zip(norms, initial)):
    used = np.abs(now - before) > 1e-3
    assert used.any(), s
    assert np.all(np.abs(now[used] - 1) < 0.05), (s, now[used])
    np.testing.assert_array_equal(now[~used], before[~used])


def test_resume_is_exact(straight, small_features, tmp_path):
  workdir, summary = straight
  config = lambda steps: tiny_config(
    small_features, PRESET, eval_every_steps=8, num_train_steps=steps
  )
  assert loop.train_and_evaluate(config(4), str(tmp_path))['step'] == 4
  second = loop.train_and_evaluate(config(8), str(tmp_path))
  assert second['start_step'] == 4
  for step in range(5, 9):
    assert second['train_losses'][step] == pytest.approx(summary['train_losses'][step], abs=1e-6)
  for a, b in zip(_codebook_norms(workdir), _codebook_norms(tmp_path)):
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_four_devices_renormalise_the_same_rows(straight, small_features, tmp_path):
  """The max_norm lookup sees the codes of the whole global batch when it is sharded over devices:
  a 4-device run takes the same steps as the 1-device one."""
  workdir, summary = straight
  result = run_in_repo(
    [sys.executable, 'main.py', *main_flags(small_features, tmp_path, PRESET, eval_every_steps=8)],
    timeout=600,
    env=devices_env(4),
  )
  assert result.returncode == 0, result.stderr[-3000:]
  four = json.load(open(tmp_path / 'train_summary.json'))['train_losses']
  np.testing.assert_allclose(
    [four[str(s)] for s in range(1, 9)],
    [summary['train_losses'][s] for s in range(1, 9)],
    atol=1e-5,
    rtol=0,
  )
  # Unused rows keep their N(0, 1) norm of ~6, so a row renormalised on one side only would show.
  for a, b in zip(_codebook_norms(workdir), _codebook_norms(tmp_path)):
    np.testing.assert_allclose(a, b, atol=1e-4)  # 8 Adam steps of differently ordered sums


def test_tensorboard_has_every_scale(straight):
  workdir, _ = straight
  values = read_events(str(workdir))
  for name in ('reconstruction', 'conversion'):
    assert values[f'mel/{name}'][-1][1].image.encoded_image_string.startswith(b'\x89PNG')
    for j in range(3):
      assert values[f'mel_scales/{name}_d{j}'][-1][0] == 8


@pytest.mark.parametrize(
  'preset,trainer',
  [
    ('vqvc_plus_multi.py:tiny', 'multi'),
    ('vqvc_plus_multi_rhythm.py:tiny', 'simple_normalize_multi_rhythm'),
    ('vqvc_plus_multi_speaker.py:codebook_gen_tiny', 'simple_normalize_multi'),
  ],
)
def test_other_multi_trainers_and_models_train(preset, trainer, small_features, tmp_path):
  summary = loop.train_and_evaluate(
    tiny_config(
      small_features, preset, trainer=trainer, num_train_steps=3, **{'data.crop_frames': 64}
    ),
    str(tmp_path),
  )
  assert summary['step'] == 3 and all(np.isfinite(v) for v in summary['train_losses'].values())
  assert 1 <= summary['compiles'] <= 3  # one per stretched-length bucket seen
  if trainer == 'multi':
    assert (tmp_path / 'stats.npz').exists()  # its mean/std travel with the run


@pytest.mark.parametrize(
  'model,trainer,match',
  [
    ('vqvc+', 'simple_normalize_multi', 'cannot train vqvc\\+'),
    ('vqvc+_multi', 'normal', 'cannot train vqvc\\+_multi'),
    ('vqvc+_multi', 'simple_normalize_multi_rhythm', 'go together'),
    ('vqvc+', 'rhythm', 'go together'),  # used to fail inside the step with a TypeError
    ('vqvc+_multi', 'nope', 'valid trainers: normal'),
  ],
)
def test_mismatched_model_and_trainer_is_a_one_line_error(model, trainer, match, small_features):
  config = tiny_config(small_features, PRESET, trainer=trainer, **{'model.name': model})
  with pytest.raises(errors.ConfigError, match=match):
    voice_conversion.check_config(config)


def test_one_shot_conversion_and_reconstruction_from_the_checkpoint(straight, tmp_path):
  """inference.ipynb: encode source and target, decode the source's content with the target's
  speaker terms, the last scale through a vocoder."""
  workdir, _ = straight
  result = run_in_repo(
    [
      sys.executable,
      'main.py',
      '--mode=convert',
      f'--workdir={workdir}',
      f'--source={DEMO / "awb" / "awb_005.ogg"}',
      f'--target={DEMO / "slt" / "slt_001.ogg"}',
      f'--output={tmp_path / "out.wav"}',
    ],
    timeout=600,
  )
  assert result.returncode == 0, result.stderr[-2000:]
  wave, rate = sf.read(tmp_path / 'out.wav')
  assert rate == 22050 and np.isfinite(wave).all() and np.abs(wave).max() > 1e-3
  converter = convert.Converter.restore(str(workdir))
  mel = feature_files.load_features(
    feature_files.list_features(checkpoints.read_config(str(workdir)).data.test_dir)[0]
  )
  scales, enc = converter.reconstruct_scales(mel)
  frames = mel.shape[1]
  assert [s.shape for s in scales] == [(20, -(-frames // 4)), (40, -(-frames // 2)), (80, frames)]
  np.testing.assert_array_equal(converter.reconstruct_mel(mel)[0], scales[-1])
  assert len(enc.codes) == 3


def test_eval_report_shows_every_scale(straight):
  workdir, _ = straight
  metrics = evaluate.run(str(workdir), num_pairs=2, report_pairs=1, num_vocoder_utterances=1)
  assert np.isfinite(metrics['recon_l1_logmel'])
  page = (workdir / 'eval' / 'step_8' / 'report.html').read_text()
  for name in ('reconstruction', 'conversion'):
    for j in (0, 1):
      assert f'assets/pair00_{name}_d{j}.png' in page
      assert (workdir / 'eval' / 'step_8' / 'assets' / f'pair00_{name}_d{j}.png').stat().st_size > 0


def test_ported_original_checkpoint_converts_and_decodes_edited_codes(parity_dir, tmp_path):
  """An original vqvc+_multi_simple checkpoint through skipvqvc-port, then the notebooks' calls."""
  golden = parity_dir / 'multi' / 'vqvcplus_multi_simple_n64_ch64.npz'
  out = tmp_path / 'ported'
  result = run_in_repo(
    [
      sys.executable,
      '-m',
      'skipvqvc_jax.apps.port',
      f'--checkpoint={golden}',
      f'--output={out}',
      '--architecture=vqvc+_multi_simple',
      '--trainer=simple_normalize_multi',
      '--prefix=param/',
    ],
    timeout=300,
  )
  assert result.returncode == 0, result.stderr
  assert json.loads(result.stdout)['n_embed'] == 64
  model = checkpoints.load(str(out))
  with np.load(golden) as g:
    x = g['input/x']
    converted = model.convert(x[:1], x[1:])  # inference.ipynb: source and target encoded apart
    np.testing.assert_allclose(converted[-1], g['out/convert_swap_d2'][:1], atol=1e-4)
    enc = model.encode(x)
    edited = [np.asarray(c) for c in enc.codes]
    edited[0] = (edited[0] + 3) % 64
    outputs = model.decode_codes(edited, enc.speaker, enc.std)
    assert np.abs(np.asarray(outputs[-1]) - g['out/recon_from_codes_d2']).max() > 1e-3
  exported = porting.export_state_dict(model)
  assert set(exported) == {
    k.removeprefix('param/') for k in np.load(golden).files if k.startswith('param/')
  }
