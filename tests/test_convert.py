"""Conversion and evaluation from a checkpoint trained here, on the demo corpus' audio files."""
import csv
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from skipvqvc_jax import audio, checkpoints, convert, evaluate, input_pipeline, train
from skipvqvc_jax.tasks import voice_conversion
from skipvqvc_jax.vocoders import GriffinLim
from tests.conftest import REPO, tiny_config

DEMO = REPO / 'data' / 'demo_corpus'


@pytest.fixture(scope='module')
def workdir(small_features, tmp_path_factory):
  path = tmp_path_factory.mktemp('run')
  train.train_and_evaluate(tiny_config(small_features, num_train_steps=4), str(path))
  return path


@pytest.fixture(scope='module')
def converter(workdir):
  return convert.Converter.restore(str(workdir))


def _frames(path):
  return audio.file_to_log_mel(str(path))[0].shape[1]


def test_one_pair_has_the_source_duration(converter, tmp_path):
  source = DEMO / 'awb' / 'awb_005.ogg'
  out = converter.convert_file(str(source), [str(DEMO / 'slt' / 'slt_001.ogg')],
                               str(tmp_path / 'out.wav'))
  wave, sr = sf.read(out)
  info = sf.info(out)
  assert sr == 22050 and info.format == 'WAV' and wave.ndim == 1
  # The source's trimmed duration (features drop leading and trailing silence), to within a hop.
  assert abs(len(wave) - _frames(source) * 256) <= 256
  assert np.isfinite(wave).all() and np.abs(wave).max() > 1e-3


def test_step_picks_a_saved_checkpoint(workdir, converter):
  at_4 = convert.Converter.restore(str(workdir), step=4)  # the latest, so the default's weights
  mel = np.random.default_rng(0).normal(-4, 1, (80, 64)).astype(np.float32)
  np.testing.assert_array_equal(at_4.reconstruct(mel)[0], converter.reconstruct(mel)[0])
  untrained = convert.Converter(voice_conversion.build_model(at_4.config), at_4.config,
                                at_4.trainer)
  assert np.abs(untrained.reconstruct(mel)[0] - at_4.reconstruct(mel)[0]).max() > 1e-3
  with pytest.raises(convert.ConversionError, match=r'no checkpoint of step 3 in .*; saved steps: 4$'):
    convert.Converter.restore(str(workdir), step=3)


def test_several_references_are_averaged(converter):
  source = converter.features(str(DEMO / 'awb' / 'awb_005.ogg'))
  refs = [converter.features(str(DEMO / 'slt' / f'slt_00{i}.ogg')) for i in (1, 2, 3)]
  one = converter.convert_mel(source, converter.speaker(refs[:1]))
  three = converter.convert_mel(source, converter.speaker(refs))
  assert one.shape == three.shape == source.shape
  assert np.abs(one - three).max() > 1e-4
  # The average of the references' embeddings, scale by scale.
  encs = [converter.encode(r) for r in refs]
  np.testing.assert_allclose(converter.speaker(refs).speaker[0],
                             np.mean([e.speaker[0] for e in encs], axis=0), rtol=1e-5, atol=1e-7)


def test_one_compile_per_length_bucket(converter):
  assert convert.bucket_frames(193, 8) == convert.bucket_frames(208, 8) == 208
  assert convert.bucket_frames(209, 8) == 224  # at most 1/8 padding: 16-frame steps from 128 up
  assert convert.bucket_frames(1000, 32) % 64 == 0 and convert.bucket_frames(7, 8) == 8
  before = converter._encode._cache_size()
  rng = np.random.default_rng(0)
  for frames in (201, 205, 208):  # one bucket
    converter.convert_mel(rng.normal(-4, 1, (80, frames)).astype(np.float32),
                          converter.speaker([rng.normal(-4, 1, (80, 150)).astype(np.float32)]))
  assert converter._encode._cache_size() - before <= 2  # the 208 bucket and the 152 bucket


def test_sixty_second_source(converter, tmp_path):
  parts = [audio.load(str(p)) for p in sorted((DEMO / 'rms').glob('*.ogg'))]
  long = np.concatenate(parts)[:60 * 22050]
  assert len(long) == 60 * 22050
  sf.write(tmp_path / 'long.wav', long, 22050)
  out = converter.convert_file(str(tmp_path / 'long.wav'), [str(DEMO / 'slt' / 'slt_001.ogg')],
                               str(tmp_path / 'long_out.wav'))
  assert abs(sf.info(out).frames - _frames(tmp_path / 'long.wav') * 256) <= 256


def test_griffin_lim_reconstructs_a_known_signal():
  sr = 22050
  t = np.arange(sr * 2) / sr
  y = (0.3 * np.sin(2 * np.pi * 220 * t) + 0.2 * np.sin(2 * np.pi * 660 * t * (1 + 0.1 * t))
       ).astype(np.float32)
  mel = audio.log_mel(y)
  wave = GriffinLim(n_iter=32)(mel)
  assert len(wave) == mel.shape[1] * 256
  rebuilt = audio.mel_basis() @ audio.magnitude(wave)
  target = 10.0 ** mel
  convergence = np.linalg.norm(rebuilt - target) / np.linalg.norm(target)
  assert convergence < 0.15, convergence  # measured 0.05-0.1 for this signal


def _main(*args):
  return subprocess.run([sys.executable, 'main.py', *map(str, args)], cwd=REPO,
                        capture_output=True, text=True, timeout=600)


def test_equal_error_threshold():
  threshold, eer = evaluate.equal_error_threshold([0.9, 0.8, 0.7, 0.4], [0.1, 0.2, 0.5, 0.3])
  assert eer == 0.25 and 0.4 <= threshold <= 0.5
  assert evaluate.equal_error_threshold([0.9, 0.8], [0.1, 0.2])[1] == 0.0
  # The sorted-scores computation agrees with the definition, scanned threshold by threshold.
  rng = np.random.default_rng(0)
  same, different = rng.normal(0.7, 0.1, 300).round(3), rng.normal(0.5, 0.1, 900).round(3)
  candidates = np.unique(np.concatenate([same, different]))
  rates = [((same < t).mean(), (different >= t).mean()) for t in candidates]
  best = int(np.argmin([abs(fr - fa) for fr, fa in rates]))
  assert evaluate.equal_error_threshold(same, different) == (
      pytest.approx(candidates[best]), pytest.approx(sum(rates[best]) / 2))


def test_speaker_similarity_scores_every_pair_of_a_capped_set(small_features):
  """The statistics' plumbing with an embedding anyone can compute (the band means of the mel); the
  pairs' sources and references need not be among the capped utterances."""
  files = sorted(str(p) for p in (small_features / 'test').glob('*.npy'))
  embed = lambda mel: (lambda v: v / np.linalg.norm(v))(np.asarray(mel).mean(axis=1) + 6)
  pairs = evaluate.choose_pairs(files, 6, seed=1)
  for pair in pairs:
    pair['converted_mel'] = np.load(pair['reference'])  # a perfect conversion: the reference itself
  stats = evaluate.speaker_similarity(embed, evaluate.capped(files, 2, seed=0), pairs)
  assert stats['utterances'] == 4 and stats['to_target'] == pytest.approx(1.0)
  assert 0 <= stats['real_eer'] <= 0.5 and stats['accepted_as_target'] == 1.0


def test_speaker_statistics_take_a_capped_seeded_share_of_each_speaker():
  files = [f'/x/spk{s}_{u:03d}.npy' for s in range(3) for u in range(10 + 30 * s)]
  chosen = evaluate.capped(files, 20, seed=0)
  counts = [sum(f.startswith(f'/x/spk{s}_') for f in chosen) for s in range(3)]
  assert counts == [10, 20, 20] and chosen == evaluate.capped(files, 20, seed=0)
  assert chosen == [f for f in files if f in set(chosen)]  # in file order


def test_lmcd_is_zero_for_identical_mels_and_grows_with_distortion():
  mel = audio.log_mel(audio.load(str(DEMO / 'awb' / 'awb_001.ogg')))
  assert evaluate.lmcd_dtw(mel, mel) == pytest.approx(0.0, abs=1e-9)
  noisy = mel + np.random.default_rng(0).normal(0, 0.3, mel.shape)
  assert 0 < evaluate.lmcd_dtw(noisy, mel) < evaluate.lmcd_dtw(noisy + 0.5 * np.sin(
      np.arange(80))[:, None], mel)


def test_cli_pairs_source_dir_and_output_mel(workdir, tmp_path):
  pairs = tmp_path / 'pairs.csv'
  with open(pairs, 'w', newline='') as f:
    w = csv.writer(f)
    w.writerow(['source', 'target', 'output'])
    w.writerow([DEMO / 'awb' / 'awb_010.ogg', DEMO / 'slt' / 'slt_001.ogg', tmp_path / 'a.wav'])
    w.writerow([DEMO / 'kal' / 'kal_010.ogg',
                f'{DEMO / "slt" / "slt_001.ogg"};{DEMO / "slt" / "slt_002.ogg"}', tmp_path / 'b.wav'])
  result = _main('--mode=convert', f'--workdir={workdir}', f'--pairs={pairs}')
  assert result.returncode == 0, result.stderr[-2000:]
  assert sf.info(tmp_path / 'a.wav').samplerate == 22050 and (tmp_path / 'b.wav').exists()
  sources = tmp_path / 'sources'
  sources.mkdir()
  for name in ('esf4_001.ogg', 'esf4_002.ogg'):
    shutil.copy(DEMO / 'esf4' / name, sources / name)
  result = _main('--mode=convert', f'--workdir={workdir}', f'--source_dir={sources}',
                 f'--target={DEMO / "awb" / "awb_003.ogg"}', f'--output_dir={tmp_path / "mels"}',
                 '--output_mel')
  assert result.returncode == 0, result.stderr[-2000:]
  mel = np.load(tmp_path / 'mels' / 'esf4_001.npy')
  assert mel.dtype == np.float32 and mel.shape == (80, _frames(sources / 'esf4_001.ogg'))


def test_cli_errors_are_one_line(workdir, tmp_path):
  corrupt = tmp_path / 'corrupt.wav'
  corrupt.write_bytes(b'RIFF....WAVEfmt nonsense')
  target = DEMO / 'slt' / 'slt_001.ogg'
  cases = [
      (('--mode=convert', f'--workdir={workdir}', f'--source={corrupt}', f'--target={target}',
        f'--output={tmp_path / "x.wav"}'), f'error: {corrupt}: cannot decode audio'),
      (('--mode=convert', f'--workdir={tmp_path / "nowhere"}', f'--source={target}',
        f'--target={target}', f'--output={tmp_path / "x.wav"}'),
       f'error: checkpoint workdir {tmp_path / "nowhere"} does not exist'),
      (('--mode=convert', f'--workdir={workdir}', f'--source={target}'),
       'error: give --source, --target and --output'),
  ]
  # A workdir whose config names another model than its checkpoint holds.
  other = tmp_path / 'other'
  shutil.copytree(workdir, other, ignore=shutil.ignore_patterns('tensorboard', 'eval'))
  config = json.load(open(other / 'config.json'))
  config['model']['name'] = 'vqvc+_speaker_quantize'
  json.dump(config, open(other / 'config.json', 'w'))
  cases.append((('--mode=convert', f'--workdir={other}', f'--source={target}', f'--target={target}',
                 f'--output={tmp_path / "x.wav"}'), 'does not fit the model in its config.json'))
  empty = tmp_path / 'empty_run'
  empty.mkdir()
  shutil.copy(workdir / 'config.json', empty / 'config.json')
  cases.append((('--mode=convert', f'--workdir={empty}', f'--source={target}', f'--target={target}',
                 f'--output={tmp_path / "x.wav"}'), 'has no checkpoint yet'))
  for args, message in cases:
    result = _main(*args)
    assert result.returncode == 1, (args, result.stderr[-2000:])
    errors = [line for line in result.stderr.splitlines() if line.startswith('error: ')]
    assert len(errors) == 1 and message in errors[0], (message, result.stderr[-2000:])
    assert 'Traceback' not in result.stderr
  assert not (tmp_path / 'x.wav').exists()


def test_eval_writes_metrics_and_a_report(workdir, caplog):
  caplog.set_level('INFO')
  metrics = evaluate.run(str(workdir), num_pairs=4, report_pairs=2)
  # Each phase says how far it is.
  for phase in ('eval: reconstructing the test utterances: 12/12', 'eval: converting: 4/4 pairs'):
    assert phase in caplog.text, phase
  written = json.load(open(workdir / 'eval' / 'step_4' / 'metrics.json'))
  assert written == json.loads(json.dumps(metrics))
  assert written['test_utterances'] == 12 and written['recon_l1_logmel'] > 0
  for s in range(3):
    book = written[f'codebook_s{s}']
    assert book['used'] + book['dead_codes'] == book['size'] and 1 <= book['perplexity'] <= book['size']
  conversion = written['conversion']
  # The demo corpus is parallel: every pair has the target's own reading of the source sentence.
  assert conversion['pairs'] == conversion['parallel_pairs'] == 4
  assert 0 < conversion['lmcd_dtw_db'] < 100 and 0 < conversion['baseline_lmcd_dtw_db'] < 100
  pairs = json.load(open(workdir / 'eval' / 'step_4' / 'pairs.json'))
  # The pairs are a fixed, seeded choice over the test files: what choose_pairs gives again.
  test_files = input_pipeline.list_features(checkpoints.read_config(str(workdir)).data.test_dir)
  chosen = ('source', 'target_speaker', 'reference', 'parallel')
  assert [{k: p[k] for k in chosen} for p in pairs] == evaluate.choose_pairs(test_files, 4, seed=0)
  for pair in pairs:
    assert evaluate.utterance_name(pair['source']) == evaluate.utterance_name(pair['parallel'])
    assert evaluate.utterance_name(pair['reference']) != evaluate.utterance_name(pair['source'])
  similarity = written['speaker_similarity']
  if similarity['available']:  # with the eval extra installed
    assert -1 <= similarity['to_target'] <= 1 and -1 <= similarity['to_source'] <= 1
    assert 0 <= similarity['accepted_as_target'] <= 1 and 0 <= similarity['real_eer'] <= 0.5
    assert similarity['real_same_speaker'] > similarity['real_other_speaker']
  else:
    assert 'pip install' in similarity['why']
  assert evaluate.run(str(workdir), num_pairs=4, report_pairs=0)['conversion'] == conversion
  page = (workdir / 'eval' / 'step_4' / 'report.html').read_text()
  assert '<table>' in page and 'href="../index.html"' in page
  assert 'href="step_4/report.html"' in (workdir / 'eval' / 'index.html').read_text()
  for ref in [part.split('"')[0] for part in page.split('src="')[1:]]:
    assert (workdir / 'eval' / 'step_4' / ref).exists(), ref


def test_convert_with_a_ported_melgan_vocoder(workdir, ported_melgan, tmp_path):
  source = DEMO / 'kal' / 'kal_007.ogg'
  result = _main('--mode=convert', f'--workdir={workdir}', f'--source={source}',
                 f'--target={DEMO / "slt" / "slt_001.ogg"}', f'--output={tmp_path / "m.wav"}',
                 f'--vocoder={ported_melgan[0]}')
  assert result.returncode == 0, result.stderr[-2000:]
  info = sf.info(tmp_path / 'm.wav')
  assert info.samplerate == 22050 and info.frames == _frames(source) * 256


def test_console_scripts(workdir, tmp_path):
  bin_dir = os.path.dirname(sys.executable)
  convert_script = os.path.join(bin_dir, 'skipvqvc-convert')
  if not os.path.exists(convert_script):
    pytest.skip('console scripts are installed by pip install -e ".[test]"')
  result = subprocess.run([convert_script, f'--workdir={workdir}', f'--source={tmp_path / "no.wav"}',
                           f'--target={DEMO / "slt" / "slt_001.ogg"}', f'--output={tmp_path / "o.wav"}'],
                          capture_output=True, text=True, timeout=600)
  assert result.returncode == 1 and f'error: {tmp_path / "no.wav"}: no such file' in result.stderr
  result = subprocess.run([os.path.join(bin_dir, 'skipvqvc-preprocess'), str(tmp_path / 'nothing'),
                           str(tmp_path / 'out')], capture_output=True, text=True, timeout=600)
  assert result.returncode == 1 and 'does not exist' in result.stderr


def test_long_mels_are_vocoded_in_windows_that_join_exactly():
  from skipvqvc_jax.vocoders import windows
  mel = np.random.default_rng(0).normal(-4, 1, (80, 2500)).astype(np.float32)
  # A vocoder whose output at a frame depends on that frame alone: windows and their crossfades must
  # give exactly what one pass over the whole mel gives.
  local = lambda mels: np.repeat(mels.mean(axis=1), 256, axis=-1)
  calls = []
  windowed = windows.vocode_in_windows(lambda m: calls.append(m.shape) or local(m), mel, 256)
  np.testing.assert_allclose(windowed, local(mel[None])[0], rtol=1e-6, atol=1e-6)
  assert len(windowed) == 2500 * 256
  assert set(calls) == {(1, 80, windows.WINDOW_FRAMES)}  # one shape: one compile


def test_griffin_lim_in_windows_is_as_good_as_in_one_pass():
  sr, seconds = 22050, 40
  t = np.arange(sr * seconds) / sr
  y = (0.3 * np.sin(2 * np.pi * (200 + 5 * t) * t)).astype(np.float32)
  mel = audio.log_mel(y)
  assert mel.shape[1] > 3 * 1024  # several windows

  def convergence(wave):
    rebuilt, target = audio.mel_basis() @ audio.magnitude(wave), 10.0 ** mel
    return np.linalg.norm(rebuilt - target) / np.linalg.norm(target)

  vocoder = GriffinLim(n_iter=32)
  windowed = vocoder(mel)
  whole = vocoder(mel[None])[0]  # a batch is vocoded in one pass
  assert len(windowed) == len(whole) == mel.shape[1] * 256
  assert convergence(windowed) < convergence(whole) + 0.02, (convergence(windowed), convergence(whole))


def test_world_mcd_is_zero_for_the_same_recording_and_grows_with_distortion():
  pytest.importorskip('pyworld', reason='the standard MCD needs the eval extra (pyworld, pysptk)')
  pytest.importorskip('pysptk', reason='the standard MCD needs the eval extra (pyworld, pysptk)')
  wave = audio.trim(audio.load(str(DEMO / 'awb' / 'awb_001.ogg')))[0]
  tilted = lambda k: np.concatenate([wave[:1], wave[1:] - k * wave[:-1]])  # a spectral tilt
  assert evaluate.world_mcd_dtw(wave, wave, 22050) == pytest.approx(0.0, abs=1e-9)
  assert 0 < evaluate.world_mcd_dtw(tilted(0.3), wave, 22050) < evaluate.world_mcd_dtw(
      tilted(0.9), wave, 22050)
  assert evaluate.world_mel_cepstrum(wave, 22050).shape[1] == 24
