"""Training a vocoder on real audio: exact audio/mel pairing, losses, resume, conversion and eval."""

import json
import os
import shutil
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
import soundfile as sf
from flax import nnx

from skipvqvc_jax import vocoders
from skipvqvc_jax.configs import vocoder as vocoder_configs
from skipvqvc_jax.core import errors, fileio
from skipvqvc_jax.data import audio, corpus
from skipvqvc_jax.evaluation import evaluate
from skipvqvc_jax.inference import convert
from skipvqvc_jax.store import checkpoints
from skipvqvc_jax.training import loop
from skipvqvc_jax.training.tasks import vocoder as vocoder_task
from skipvqvc_jax.training.tasks import waveforms
from tests.conftest import REPO, devices_env, read_events, run_in_repo, tiny_config

DEMO = REPO / 'data' / 'demo_corpus'


def tiny_vocoder_config(features, **overrides):
  """configs/vocoder.py:tiny on `features`: MelGAN's and HiFi-GAN's discriminators, every loss."""
  return tiny_config(features, 'vocoder.py:tiny', **overrides)


def _generator_params(workdir):
  return nnx.to_pure_dict(nnx.state(checkpoints.load(str(workdir)), nnx.Param))


def test_every_preset_builds():
  for preset in vocoder_configs.PRESETS:
    config = vocoder_configs.get_config(preset)
    generator = nnx.eval_shape(lambda: vocoder_task.build_generator(config))
    discriminators = nnx.eval_shape(lambda: vocoder_task.build_discriminators(config))
    assert generator.hop_length == config.features.hop_length
    assert (discriminators.multi_period is None) == (not config.discriminator.periods)
  assert vocoder_configs.get_config('hifigan_style').discriminator.periods == (2, 3, 5, 7, 11)


def test_cached_waveforms_pair_exactly_with_their_features(small_features, tmp_path):
  logs = []
  waveforms.cache_waveforms(
    str(small_features / 'test'), str(tmp_path), audio.FeatureParams(), log=logs.append
  )
  assert logs[-1].startswith('caching waveforms: 12/12 files (100%)')  # the phase reports
  cached = sorted(os.listdir(tmp_path))
  assert cached == sorted(os.listdir(small_features / 'test'))
  sources = corpus.source_waveforms(
    [str(small_features / 'test' / name) for name in cached[:3]], audio.FeatureParams()
  )
  for name in cached[:3]:
    feature = np.load(small_features / 'test' / name)
    wave = sources[str(small_features / 'test' / name)]
    stored = np.load(tmp_path / name)
    assert stored.dtype == np.int16 and stored.shape == (1, len(wave))
    np.testing.assert_array_equal(stored[0], np.round(wave * waveforms.WAVE_SCALE).astype(np.int16))
    # The training step's features of the audio are the preprocessed features, frame for frame.
    on_device = np.asarray(audio.batch_log_mel(wave[None], audio.FeatureParams()))[0]
    assert on_device.shape == feature.shape
    np.testing.assert_allclose(on_device, feature, atol=2e-3)


@pytest.fixture(scope='module')
def straight(small_features, tmp_path_factory):
  workdir = tmp_path_factory.mktemp('vocoder_straight')
  return workdir, loop.train_and_evaluate(tiny_vocoder_config(small_features), str(workdir))


@pytest.fixture(scope='module')
def resumed(small_features, tmp_path_factory):
  workdir = tmp_path_factory.mktemp('vocoder_resumed')
  first = loop.train_and_evaluate(
    tiny_vocoder_config(small_features, num_train_steps=4), str(workdir)
  )
  second = loop.train_and_evaluate(tiny_vocoder_config(small_features), str(workdir))
  return workdir, first, second


def test_losses_move_and_both_networks_learn(straight, small_features):
  workdir, summary = straight
  assert summary['status'] == 'finished' and summary['step'] == 8 and summary['compiles'] == 1
  losses = list(summary['train_losses'].values())
  assert len(losses) == 8 and len(set(np.round(losses, 5))) == 8
  # The mel loss pulls the generator's output towards the real spectrum within a few steps.
  assert summary['evals'][8]['mel_l1'] < summary['evals'][0]['mel_l1']
  last = summary['last_train']
  assert np.isfinite([last['d_loss'], last['adversarial_loss'], last['feature_loss']]).all()
  config = tiny_vocoder_config(small_features)
  fresh = dict(
    generator=checkpoints.params_of(vocoder_task.build_generator(config)),
    discriminator=checkpoints.params_of(vocoder_task.build_discriminators(config)),
  )
  with checkpoints.TrainCheckpoints(str(workdir), async_save=False) as ckpt:
    state = ckpt.restore_subtree(dict(params=fresh))
    data_state = ckpt.manager.restore(8, args=ocp.args.Composite(data=ocp.args.JsonRestore())).data
  for net in ('generator', 'discriminator'):
    moved = [
      float(np.abs(a - b).max())
      for a, b in zip(jax.tree.leaves(state['params'][net]), jax.tree.leaves(fresh[net]))
    ]
    assert max(moved) > 1e-4, net
  assert data_state  # the input pipeline's position is in the checkpoint


def test_tensorboard_holds_losses_audio_and_mels(straight):
  values = read_events(str(straight[0]))
  for tag in (
    'train/loss',
    'train/d_loss',
    'train/adversarial_loss',
    'train/feature_loss',
    'train/mel_l1',
    'train/g_grad_norm',
    'train/d_grad_norm',
    'train/steps_per_sec',
    'test/mel_l1',
    'test/spectral_convergence',
  ):
    assert tag in values and all(v.HasField('simple_value') for _, v in values[tag]), tag
  samples = (
    int(0.5 * 22050) // 256 * 256
  )  # sample_seconds of the first test utterance, whole frames
  for name in ('real', 'generated', 'griffin_lim'):
    sounds = values[f'audio/{name}']
    # What does not change between evaluations is written once a run.
    assert [s for s, _ in sounds] == ([0, 8] if name == 'generated' else [0])
    assert sounds[-1][1].audio.sample_rate == 22050 and sounds[-1][1].audio.length_frames == samples
  for name in ('real', 'generated'):
    assert values[f'mel/{name}'][-1][1].image.encoded_image_string.startswith(b'\x89PNG')


def test_resume_is_exact(straight, resumed):
  workdir, summary = straight
  resumed_dir, first, second = resumed
  assert first['step'] == 4 and second['start_step'] == 4 and second['step'] == 8
  for step in range(5, 9):
    np.testing.assert_allclose(
      second['train_losses'][step], summary['train_losses'][step], rtol=1e-5
    )
  a, b = _generator_params(workdir), _generator_params(resumed_dir)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(x, y, atol=1e-6)


@pytest.fixture(scope='module')
def vc_workdir(small_features, tmp_path_factory):
  path = tmp_path_factory.mktemp('vc')
  loop.train_and_evaluate(tiny_config(small_features, num_train_steps=2), str(path))
  return path


def test_convert_with_the_trained_vocoder(straight, vc_workdir, tmp_path):
  source = DEMO / 'kal' / 'kal_007.ogg'
  result = run_in_repo(
    [
      sys.executable,
      'main.py',
      '--mode=convert',
      f'--workdir={vc_workdir}',
      f'--source={source}',
      f'--target={DEMO / "slt" / "slt_001.ogg"}',
      f'--output={tmp_path / "out.wav"}',
      f'--vocoder={straight[0]}',
    ],
    timeout=600,
  )
  assert result.returncode == 0, result.stderr[-2000:]
  wave, sr = sf.read(tmp_path / 'out.wav')
  assert sr == 22050 and len(wave) == audio.file_to_log_mel(str(source))[0].shape[1] * 256
  assert np.isfinite(wave).all() and 0 < np.abs(wave).max() <= 1
  with pytest.raises(
    convert.ConversionError, match='holds a vocoder, not a voice-conversion model'
  ):
    convert.Converter.restore(str(straight[0]))


def test_eval_compares_griffin_lim_with_the_neural_vocoder(straight, vc_workdir):
  metrics = evaluate.run(
    str(vc_workdir), vocoder=str(straight[0]), num_pairs=2, report_pairs=1, num_vocoder_utterances=2
  )
  compared = metrics['vocoders']
  assert compared['utterances'] == 2 and set(compared) == {'utterances', 'griffin_lim', 'melgan'}
  for name in ('griffin_lim', 'melgan'):
    assert 0 < compared[name]['resynthesis_lmcd_dtw_db'] < 100
    if metrics['speaker_similarity']['available']:  # with the eval extra installed
      assert -1 <= compared[name]['similarity_to_real'] <= 1
  # Griffin-Lim inverts the real magnitude; an 8-step vocoder is still far from it.
  assert (
    compared['griffin_lim']['resynthesis_lmcd_dtw_db']
    < compared['melgan']['resynthesis_lmcd_dtw_db']
  )
  page = (vc_workdir / 'eval' / 'step_2' / 'report.html').read_text()
  assert '<h2>Vocoders</h2>' in page
  for name in ('real', 'griffin_lim', 'melgan'):
    assert (vc_workdir / 'eval' / 'step_2' / 'assets' / f'vocoder_{name}.wav').exists()
  assert json.load(open(vc_workdir / 'eval' / 'step_2' / 'metrics.json'))['vocoders'] == compared


def test_vocoder_data_errors_name_the_problem(small_features, tmp_path):
  bare = tmp_path / 'bare'
  shutil.copytree(small_features / 'train', bare)
  with pytest.raises(errors.CorpusError, match='has no manifest.json'):
    waveforms.waveform_dir(str(bare), str(tmp_path / 'w1'), audio.FeatureParams())
  moved = tmp_path / 'moved'
  shutil.copytree(small_features, moved)
  manifest = fileio.load_json(moved / corpus.MANIFEST)
  manifest['input_dir'] = str(tmp_path / 'audio_gone')
  fileio.save_json(moved / corpus.MANIFEST, manifest)
  with pytest.raises(errors.CorpusError, match='is missing: training a vocoder needs the audio'):
    waveforms.waveform_dir(str(moved / 'train'), str(tmp_path / 'w2'), audio.FeatureParams())
  result = run_in_repo(
    [
      sys.executable,
      'main.py',
      '--config=configs/vocoder.py:melgan',
      f'--config.data.train_dir={moved / "train"}',
      f'--workdir={tmp_path / "w3"}',
    ],
    timeout=600,
  )
  assert result.returncode == 1 and 'Traceback' not in result.stderr
  assert 'is missing: training a vocoder needs the audio' in result.stderr.strip().splitlines()[-1]
  with pytest.raises(ValueError, match='a vocoder training workdir'):
    vocoders.get(str(tmp_path))


def test_fine_tuning_starts_from_a_ported_generator(small_features, ported_melgan, tmp_path):
  config = tiny_vocoder_config(
    small_features,
    num_train_steps=1,
    **{'generator.ngf': 32, 'generator.residual_layers': 3, 'init_from': str(ported_melgan[0])},
  )
  loop.train_and_evaluate(config, str(tmp_path / 'tuned'))
  ported = nnx.to_pure_dict(nnx.state(vocoders.load_generator(str(ported_melgan[0])), nnx.Param))
  tuned = _generator_params(tmp_path / 'tuned')
  # One Adam step moves each weight by about the learning rate (1e-4), no more.
  steps = [
    float(np.abs(np.asarray(a) - np.asarray(b)).max())
    for a, b in zip(jax.tree.leaves(tuned), jax.tree.leaves(ported))
  ]
  assert 0 < max(steps) < 3e-4
  with pytest.raises(errors.TrainingError, match='holds .*ngf.: 32.*not the configured'):
    loop.train_and_evaluate(
      tiny_vocoder_config(small_features, init_from=str(ported_melgan[0])),
      str(tmp_path / 'mismatch'),
    )


def test_export_to_the_original_format_and_back(straight, tmp_path):
  port = lambda *flags: run_in_repo([sys.executable, '-m', 'skipvqvc_jax.apps.port', *flags])
  result = port(f'--checkpoint={straight[0]}', f'--output={tmp_path / "g.npz"}')
  assert result.returncode == 0, result.stderr[-2000:]
  with np.load(tmp_path / 'g.npz') as state_dict:
    assert 'model.1.weight_g' in state_dict.files and 'model.1.weight_v' in state_dict.files
  result = port(
    f'--checkpoint={tmp_path / "g.npz"}', f'--output={tmp_path / "back"}', '--architecture=melgan'
  )
  assert result.returncode == 0, result.stderr[-2000:]
  assert json.loads(result.stdout)['ngf'] == 4
  mel = np.random.default_rng(0).normal(-4, 1, (1, 80, 12)).astype(np.float32)
  ours = checkpoints.load(str(straight[0]))(mel)
  back = vocoders.load_generator(str(tmp_path / 'back'))(mel)
  np.testing.assert_allclose(back, ours, atol=1e-6)
  result = port(f'--checkpoint={tmp_path}', f'--output={tmp_path / "x.npz"}')
  assert result.returncode == 1 and 'not a model directory or a training workdir' in result.stderr


def test_two_devices_give_the_same_losses(straight, small_features, tmp_path):
  """The vocoder step shards its batch over the `data` mesh axis like the VC step: two simulated
  devices, one example each, train exactly as one device with both."""
  script = (
    'import sys, jax; from tests.training.test_vocoder_training import tiny_vocoder_config; '
    'from skipvqvc_jax.training import loop; import pathlib; assert jax.device_count() == 2; '
    'loop.train_and_evaluate(tiny_vocoder_config(pathlib.Path(sys.argv[1])), sys.argv[2])'
  )
  env = devices_env(2)
  result = run_in_repo(
    [sys.executable, '-c', script, str(small_features), str(tmp_path / 'two')],
    env=env,
    timeout=600,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  two = json.load(open(tmp_path / 'two' / 'train_summary.json'))['train_losses']
  np.testing.assert_allclose(
    [two[str(s)] for s in range(1, 9)],
    [straight[1]['train_losses'][s] for s in range(1, 9)],
    rtol=1e-4,
  )
  # Adam steps every weight by about the learning rate whatever its gradient's size, so where a
  # gradient is near zero the summation order of two devices can flip a step: rare, and at most a few
  # learning rates (1e-4) after 8 steps.
  diffs = np.concatenate(
    [
      np.abs(np.asarray(a) - np.asarray(b)).ravel()
      for a, b in zip(
        jax.tree.leaves(_generator_params(tmp_path / 'two')),
        jax.tree.leaves(_generator_params(straight[0])),
      )
    ]
  )
  assert diffs.max() < 5e-4 and np.mean(diffs > 1e-5) < 0.01, (diffs.max(), np.mean(diffs > 1e-5))
