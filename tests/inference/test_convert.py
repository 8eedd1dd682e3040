"""Conversion from a checkpoint trained here (the shared `workdir`), on the demo corpus' audio files."""

import csv
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from skipvqvc_jax.core import errors
from skipvqvc_jax.data import audio
from skipvqvc_jax.inference import convert
from skipvqvc_jax.training.tasks import voice_conversion
from tests.conftest import REPO, run_in_repo

DEMO = REPO / 'data' / 'demo_corpus'


@pytest.fixture(scope='module')
def converter(workdir):
  return convert.Converter.restore(str(workdir))


def _frames(path):
  return audio.file_to_log_mel(str(path))[0].shape[1]


def test_one_pair_has_the_source_duration(converter, tmp_path):
  source = DEMO / 'awb' / 'awb_005.ogg'
  out = converter.convert_file(
    str(source), [str(DEMO / 'slt' / 'slt_001.ogg')], str(tmp_path / 'out.wav')
  )
  wave, sr = sf.read(out)
  info = sf.info(out)
  assert sr == 22050 and info.format == 'WAV' and wave.ndim == 1
  # The source's trimmed duration (features drop leading and trailing silence), to within a hop.
  assert abs(len(wave) - _frames(source) * 256) <= 256
  assert np.isfinite(wave).all() and np.abs(wave).max() > 1e-3


def test_step_picks_a_saved_checkpoint(workdir, converter):
  at_4 = convert.Converter.restore(str(workdir), step=4)  # the latest, so the default's weights
  mel = np.random.default_rng(0).normal(-4, 1, (80, 64)).astype(np.float32)
  np.testing.assert_array_equal(at_4.reconstruct_mel(mel)[0], converter.reconstruct_mel(mel)[0])
  untrained = convert.Converter(
    voice_conversion.build_model(at_4.config), at_4.settings, at_4.trainer
  )
  assert np.abs(untrained.reconstruct_mel(mel)[0] - at_4.reconstruct_mel(mel)[0]).max() > 1e-3
  with pytest.raises(
    convert.ConversionError, match=r'no checkpoint of step 3 in .*; saved steps: 4$'
  ):
    convert.Converter.restore(str(workdir), step=3)


def test_several_references_are_averaged(converter):
  source = converter.features(str(DEMO / 'awb' / 'awb_005.ogg'))
  refs = [converter.features(str(DEMO / 'slt' / f'slt_00{i}.ogg')) for i in (1, 2, 3)]
  one = converter.convert_mel(source, converter.speaker(refs[:1]))
  three = converter.convert_mel(source, converter.speaker(refs))
  assert one.shape == three.shape == source.shape
  assert np.abs(one - three).max() > 1e-4
  # The average of the references' embeddings, scale by scale.
  encs = [converter.encode_mel(r) for r in refs]
  np.testing.assert_allclose(
    converter.speaker(refs).speaker[0],
    np.mean([e.speaker[0] for e in encs], axis=0),
    rtol=1e-5,
    atol=1e-7,
  )


def test_one_compile_per_length_bucket(converter):
  assert convert.bucket_frames(193, 8) == convert.bucket_frames(208, 8) == 208
  assert convert.bucket_frames(209, 8) == 224  # at most 1/8 padding: 16-frame steps from 128 up
  assert convert.bucket_frames(1000, 32) % 64 == 0 and convert.bucket_frames(7, 8) == 8
  before = converter._encode._cache_size()
  rng = np.random.default_rng(0)
  for frames in (201, 205, 208):  # one bucket
    converter.convert_mel(
      rng.normal(-4, 1, (80, frames)).astype(np.float32),
      converter.speaker([rng.normal(-4, 1, (80, 150)).astype(np.float32)]),
    )
  assert converter._encode._cache_size() - before <= 2  # the 208 bucket and the 152 bucket


def test_sixty_second_source(converter, tmp_path):
  parts = [audio.load(str(p)) for p in sorted((DEMO / 'rms').glob('*.ogg'))]
  long = np.concatenate(parts)[: 60 * 22050]
  assert len(long) == 60 * 22050
  sf.write(tmp_path / 'long.wav', long, 22050)
  out = converter.convert_file(
    str(tmp_path / 'long.wav'), [str(DEMO / 'slt' / 'slt_001.ogg')], str(tmp_path / 'long_out.wav')
  )
  assert abs(sf.info(out).frames - _frames(tmp_path / 'long.wav') * 256) <= 256


def _main(*args):
  return run_in_repo(
    [sys.executable, 'main.py', *map(str, args)],
    timeout=600,
  )


def test_cli_pairs_source_dir_and_output_mel(workdir, tmp_path):
  pairs = tmp_path / 'pairs.csv'
  with open(pairs, 'w', newline='') as f:
    w = csv.writer(f)
    w.writerow(['source', 'target', 'output'])
    w.writerow([DEMO / 'awb' / 'awb_010.ogg', DEMO / 'slt' / 'slt_001.ogg', tmp_path / 'a.wav'])
    w.writerow(
      [
        DEMO / 'kal' / 'kal_010.ogg',
        f'{DEMO / "slt" / "slt_001.ogg"};{DEMO / "slt" / "slt_002.ogg"}',
        tmp_path / 'b.wav',
      ]
    )
  result = _main('--mode=convert', f'--workdir={workdir}', f'--pairs={pairs}')
  assert result.returncode == 0, result.stderr[-2000:]
  assert sf.info(tmp_path / 'a.wav').samplerate == 22050 and (tmp_path / 'b.wav').exists()
  # A batch says how far it is, and ends with how many it wrote where, and an index of them.
  lines = result.stderr.strip().splitlines()
  assert 'converting: 2/2 files (100%)' in result.stderr
  assert lines[-1] == f'2 written to {tmp_path} (index: {tmp_path / "index.csv"})'
  with open(tmp_path / 'index.csv', newline='') as f:
    index = list(csv.DictReader(f))
  assert [row['output'] for row in index] == [str(tmp_path / 'a.wav'), str(tmp_path / 'b.wav')]
  assert index[1]['references'].count(';') == 1 and float(index[0]['seconds']) > 0
  sources = tmp_path / 'sources'
  sources.mkdir()
  for name in ('esf4_001.ogg', 'esf4_002.ogg'):
    shutil.copy(DEMO / 'esf4' / name, sources / name)
  result = _main(
    '--mode=convert',
    f'--workdir={workdir}',
    f'--source_dir={sources}',
    f'--target={DEMO / "awb" / "awb_003.ogg"}',
    f'--output_dir={tmp_path / "mels"}',
    '--output_mel',
  )
  assert result.returncode == 0, result.stderr[-2000:]
  assert (tmp_path / 'mels' / 'index.csv').is_file()  # beside the batch's outputs
  mel = np.load(tmp_path / 'mels' / 'esf4_001.npy')
  assert mel.dtype == np.float32 and mel.shape == (80, _frames(sources / 'esf4_001.ogg'))


def test_cli_errors_are_one_line(workdir, tmp_path):
  corrupt = tmp_path / 'corrupt.wav'
  corrupt.write_bytes(b'RIFF....WAVEfmt nonsense')
  target = DEMO / 'slt' / 'slt_001.ogg'
  cases = [
    (
      (
        '--mode=convert',
        f'--workdir={workdir}',
        f'--source={corrupt}',
        f'--target={target}',
        f'--output={tmp_path / "x.wav"}',
      ),
      f'error: {corrupt}: cannot decode audio',
    ),
    (
      (
        '--mode=convert',
        f'--workdir={tmp_path / "nowhere"}',
        f'--source={target}',
        f'--target={target}',
        f'--output={tmp_path / "x.wav"}',
      ),
      f'error: {tmp_path / "nowhere"} does not exist: give a training workdir or a model',
    ),
    (
      ('--mode=convert', f'--workdir={workdir}', f'--source={target}'),
      'error: give --source, --target and --output',
    ),
    (  # a missing input is said before the model is looked at (it was said after a restore)
      (
        '--mode=convert',
        f'--workdir={tmp_path / "nowhere"}',
        f'--source={tmp_path / "missing.wav"}',
        f'--target={target}',
        f'--output={tmp_path / "x.wav"}',
      ),
      f'error: {tmp_path / "missing.wav"}: no such file',
    ),
  ]
  # A workdir whose model.json names another model than its checkpoint holds.
  other = tmp_path / 'other'
  shutil.copytree(workdir, other, ignore=shutil.ignore_patterns('tensorboard', 'eval'))
  info = json.load(open(other / 'model.json'))
  info['model']['name'] = 'vqvc+_speaker_quantize'
  json.dump(info, open(other / 'model.json', 'w'))
  cases.append(
    (
      (
        '--mode=convert',
        f'--workdir={other}',
        f'--source={target}',
        f'--target={target}',
        f'--output={tmp_path / "x.wav"}',
      ),
      'does not fit the model in its model.json',
    )
  )
  empty = tmp_path / 'empty_run'
  empty.mkdir()
  for name in ('config.json', 'model.json'):  # what a run writes before its first step
    shutil.copy(workdir / name, empty / name)
  cases.append(
    (
      (
        '--mode=convert',
        f'--workdir={empty}',
        f'--source={target}',
        f'--target={target}',
        f'--output={tmp_path / "x.wav"}',
      ),
      'has no checkpoint yet',
    )
  )
  for args, message in cases:
    result = _main(*args)
    assert result.returncode == 1, (args, result.stderr[-2000:])
    errors = [line for line in result.stderr.splitlines() if line.startswith('error: ')]
    assert len(errors) == 1 and message in errors[0], (message, result.stderr[-2000:])
    assert 'Traceback' not in result.stderr
  assert not (tmp_path / 'x.wav').exists()


def test_convert_with_a_ported_melgan_vocoder(workdir, ported_melgan, tmp_path):
  source = DEMO / 'kal' / 'kal_007.ogg'
  result = _main(
    '--mode=convert',
    f'--workdir={workdir}',
    f'--source={source}',
    f'--target={DEMO / "slt" / "slt_001.ogg"}',
    f'--output={tmp_path / "m.wav"}',
    f'--vocoder={ported_melgan[0]}',
  )
  assert result.returncode == 0, result.stderr[-2000:]
  info = sf.info(tmp_path / 'm.wav')
  assert info.samplerate == 22050 and info.frames == _frames(source) * 256


def test_console_scripts(workdir, tmp_path):
  bin_dir = os.path.dirname(sys.executable)
  convert_script = os.path.join(bin_dir, 'skipvqvc-convert')
  if not os.path.exists(convert_script):
    pytest.skip('console scripts are installed by pip install -e ".[test]"')
  result = subprocess.run(
    [
      convert_script,
      f'--workdir={workdir}',
      f'--source={tmp_path / "no.wav"}',
      f'--target={DEMO / "slt" / "slt_001.ogg"}',
      f'--output={tmp_path / "o.wav"}',
    ],
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert result.returncode == 1 and f'error: {tmp_path / "no.wav"}: no such file' in result.stderr
  result = subprocess.run(
    [
      os.path.join(bin_dir, 'skipvqvc-preprocess'),
      str(tmp_path / 'nothing'),
      str(tmp_path / 'out'),
    ],
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert result.returncode == 1 and 'does not exist' in result.stderr


def test_the_python_api_as_a_user_calls_it(workdir, tmp_path):
  """import skipvqvc_jax; load; convert files or arrays, several references, reconstruct, codes."""
  import skipvqvc_jax
  from skipvqvc_jax.core.errors import ConversionError

  assert {'load', 'Converter', 'Codes'} <= set(skipvqvc_jax.__all__)
  converter = skipvqvc_jax.load(str(workdir))
  assert isinstance(converter, skipvqvc_jax.Converter) and converter.sample_rate == 22050
  source, refs = DEMO / 'awb' / 'awb_005.ogg', [DEMO / 'slt' / f'slt_00{i}.ogg' for i in (1, 2)]
  wave = converter.convert(source, refs[0])  # pathlib paths work as str
  assert wave.dtype == np.float32 and wave.ndim == 1 and np.isfinite(wave).all()
  assert abs(len(wave) - _frames(source) * 256) <= 256
  # Samples in memory at their own rate (int16, as a web page uploads them) are resampled as a file
  # at that rate is: the same features.
  import librosa

  at_16k = tmp_path / 'awb_16k.wav'
  sf.write(at_16k, librosa.resample(audio.load(str(source)), orig_sr=22050, target_sr=16000), 16000)
  samples, rate = sf.read(at_16k, dtype='int16')
  assert rate == 16000 and samples.dtype == np.int16
  np.testing.assert_allclose(converter.mel(samples, sr=rate), converter.mel(at_16k), atol=1e-4)
  # Several references: the voice of their average.
  two = converter.convert_mel(converter.mel(source), converter.target(refs))
  np.testing.assert_allclose(
    converter.vocoder(two), converter.convert(str(source), [str(r) for r in refs]), atol=1e-5
  )
  assert np.abs(two - converter.convert_mel(converter.mel(source), converter.target(refs[0]))).max()
  # Codes: decoded as they are, they give the reconstruction; edited, something else.
  codes = converter.encode(source)
  assert codes.frames == _frames(source) and all(c.dtype == np.int32 for c in codes.codes)
  recon = converter.reconstruct(source)  # (eager and jitted decoding differ in rounding only)
  np.testing.assert_allclose(converter.decode_codes(codes), recon, atol=2e-3 * np.abs(recon).max())
  sizes = [q.num_codes for q in converter.model.quantize]
  edited = codes._replace(codes=[(c + 5) % n for c, n in zip(codes.codes, sizes)])
  assert np.abs(converter.decode_codes(edited) - recon).max() > 0.1 * np.abs(recon).max()
  assert len(converter.decode_codes(codes, target=refs[1])) == len(wave)
  with pytest.raises(ConversionError, match=r'must lie in \[0, \d+\)'):
    converter.decode_codes(codes._replace(codes=[c + 100 for c in codes.codes]))
  with pytest.raises(ConversionError, match='nope.wav: no such file'):
    converter.convert('nope.wav', refs[0])
  with pytest.raises(ConversionError, match='the audio array: no samples'):
    converter.convert((np.zeros(0, np.float32), 22050), refs[0])
  with pytest.raises(ConversionError, match='does not exist'):
    skipvqvc_jax.load('no/such/model')


def test_inputs_say_their_rate_and_a_voice_is_kept_and_mixed(workdir, tmp_path):
  """(samples, rate) pairs per input, no rate assumed for bare samples, a folder of references, and
  a voice encoded once, saved, loaded, mixed with another, refused by another model."""
  import skipvqvc_jax
  from skipvqvc_jax.core.errors import ConversionError

  converter = skipvqvc_jax.load(str(workdir))
  source, slt = DEMO / 'awb' / 'awb_005.ogg', DEMO / 'slt' / 'slt_001.ogg'
  samples, rate = sf.read(source, dtype='float32')
  by_file = converter.convert(source, slt)
  np.testing.assert_allclose(converter.convert((samples, rate), slt), by_file, atol=1e-5)
  with pytest.raises(ConversionError, match='give its sample rate, as \\(samples, rate\\)'):
    converter.convert(samples, slt)  # it was taken to be 22,050 Hz, whatever it was
  folder = tmp_path / 'slt'
  folder.mkdir()
  for name in ('slt_001.ogg', 'slt_002.ogg'):
    shutil.copy(DEMO / 'slt' / name, folder / name)
  both = [DEMO / 'slt' / 'slt_001.ogg', DEMO / 'slt' / 'slt_002.ogg']
  np.testing.assert_allclose(converter.convert(source, folder), converter.convert(source, both))
  voice = converter.target(both)
  voice.save(tmp_path / 'slt.npz')
  kept = skipvqvc_jax.Speaker.load(tmp_path / 'slt.npz')
  np.testing.assert_allclose(converter.convert(source, kept), converter.convert(source, both))
  awb = converter.target(DEMO / 'awb' / 'awb_001.ogg')
  half = skipvqvc_jax.Speaker.mix([kept, awb], [1, 1])
  expected = [(a + b) / 2 for a, b in zip(kept.speaker, awb.speaker)]
  for got, want in zip(half.speaker, expected):
    np.testing.assert_allclose(got, want, rtol=1e-6)
  np.testing.assert_allclose(
    converter.convert(source, skipvqvc_jax.Speaker.mix([kept, awb], [1, 0])),
    converter.convert(source, kept),
  )
  other = skipvqvc_jax.Speaker([a[:, :3] for a in kept.speaker], kept.std)
  with pytest.raises(ConversionError, match='made by another model'):
    converter.convert(source, other)
  (tmp_path / 'bad.npz').write_bytes(b'not a voice')
  with pytest.raises(ConversionError, match='not a saved voice'):
    skipvqvc_jax.Speaker.load(tmp_path / 'bad.npz')


def test_a_comma_or_semicolon_in_a_file_name_is_one_reference(tmp_path):
  """--target splits at commas and a pairs file's targets at ';': a file whose name has one is still
  one reference (an existing file wins), and the others around it are still split."""
  from skipvqvc_jax.inference import conversion_jobs

  odd = tmp_path / 'slt,take 1;b.ogg'
  shutil.copy(DEMO / 'slt' / 'slt_001.ogg', odd)
  plain = str(DEMO / 'slt' / 'slt_002.ogg')
  pieces = str(odd).split(',') + [plain]
  assert conversion_jobs.rejoin(pieces, ',') == [str(odd), plain]
  assert conversion_jobs.rejoin(['a.wav', 'b.wav'], ',') == ['a.wav', 'b.wav']  # nothing to join
  pairs = tmp_path / 'pairs.csv'
  with open(pairs, 'w', newline='') as f:
    csv.writer(f).writerow([plain, f'{odd};{plain}', str(tmp_path / 'out.wav')])
  assert conversion_jobs.read_pairs(str(pairs)) == [
    (plain, [str(odd), plain], str(tmp_path / 'out.wav'))
  ]


def test_the_readme_python_example_runs(workdir, tmp_path, monkeypatch):
  """The README's Python block as a user pastes it, nothing defined for it (the demo run's workdir
  swapped for the shared tiny run, its output file for one in tmp_path)."""
  readme = (REPO / 'README.md').read_text()
  block = readme.split('```python\n', 1)[1].split('```', 1)[0]
  assert block.count('\n') <= 13  # a short example
  code = block.replace('runs/vqvc+_n32_ch32_normal', str(workdir))
  monkeypatch.chdir(REPO)
  names = {}
  code = code.replace("sf.write('out.wav'", f'sf.write({str(tmp_path / "out.wav")!r}')
  exec(compile(code, 'README.md', 'exec'), names)  # noqa: S102  (the README's own example)
  wave, rate = sf.read(tmp_path / 'out.wav')
  assert rate == 22050 and abs(len(wave) - _frames(DEMO / 'awb' / 'awb_005.ogg') * 256) <= 256
  assert len(names['codes'].codes) == 3


def test_outputs_are_the_format_they_name_and_never_silently_replaced(workdir, tmp_path):
  """--output=x.flac / x.mp3 / x.ogg are those formats (they were WAV bytes under that name); an
  extension that names none is refused before the model is restored; a second run into the same
  --output_dir is refused naming the files, and replaces them with --overwrite; --output with
  --source_dir is refused (it was ignored, and ./converted/ written wherever the user stood)."""
  source, target = DEMO / 'awb' / 'awb_010.ogg', DEMO / 'slt' / 'slt_001.ogg'
  convert = lambda *flags: _main('--mode=convert', f'--workdir={workdir}', *flags)
  pairs = tmp_path / 'pairs.csv'
  formats = {'x.flac': 'FLAC', 'x.mp3': 'MP3', 'x.ogg': 'OGG', 'x.wav': 'WAV'}
  pairs.write_text(''.join(f'{source},{target},{tmp_path / name}\n' for name in formats))
  result = convert(f'--pairs={pairs}')
  assert result.returncode == 0, result.stderr[-2000:]
  for name, kind in formats.items():
    info = sf.info(tmp_path / name)
    assert info.format == kind and info.samplerate == 22050, (name, info)
  wave, _ = sf.read(tmp_path / 'x.flac')
  np.testing.assert_allclose(wave, sf.read(tmp_path / 'x.wav')[0], atol=1e-4)

  cases = [
    (
      (f'--source={source}', f'--target={target}', f'--output={tmp_path / "x.aac"}'),
      f'error: {tmp_path / "x.aac"}: the extension names no audio format written here; end it in '
      '.wav, .flac, .ogg, .mp3',
    ),
    (
      (f'--source_dir={DEMO / "awb"}', f'--target={target}', f'--output={tmp_path / "y.wav"}'),
      '--output names one file, and --source_dir converts a folder: give --output_dir=FOLDER',
    ),
    (
      (f'--pairs={pairs}',),
      f'error: 4 of the outputs exist already ({tmp_path / "x.flac"}, {tmp_path / "x.mp3"}, '
      f'{tmp_path / "x.ogg"}, ...): give --overwrite to replace them, or other outputs',
    ),
  ]
  before = {name: (tmp_path / name).stat().st_mtime_ns for name in formats}
  for flags, expected in cases:
    result = convert(*flags)
    assert result.returncode == 1 and expected in result.stderr, result.stderr[-2000:]
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
  assert not (tmp_path / 'x.aac').exists() and not (REPO / 'converted').exists()
  assert before == {name: (tmp_path / name).stat().st_mtime_ns for name in formats}
  result = convert(f'--pairs={pairs}', '--overwrite')
  assert result.returncode == 0, result.stderr[-2000:]
  assert all((tmp_path / n).stat().st_mtime_ns > before[n] for n in formats)


def test_a_folder_of_references_and_a_six_hour_source(workdir, tmp_path):
  """--target=FOLDER is its audio files, averaged (the same output as naming them with commas; it was
  'no such file'); a 6-hour source is refused from its header, unread (it was decoded whole, 4.3 GB,
  then refused as silent)."""
  import tracemalloc

  references = tmp_path / 'slt'
  references.mkdir()
  for name in ('slt_001.ogg', 'slt_002.ogg'):
    shutil.copy(DEMO / 'slt' / name, references / name)
  (references / 'notes.txt').write_text('not audio')
  source = DEMO / 'awb' / 'awb_010.ogg'
  outputs = {}
  for how, target in (
    ('folder', references),
    ('files', f'{references / "slt_001.ogg"},{references / "slt_002.ogg"}'),
  ):
    outputs[how] = tmp_path / f'{how}.wav'
    result = _main(
      '--mode=convert',
      f'--workdir={workdir}',
      f'--source={source}',
      f'--target={target}',
      f'--output={outputs[how]}',
    )
    assert result.returncode == 0, result.stderr[-2000:]
  assert outputs['folder'].read_bytes() == outputs['files'].read_bytes()

  long_source = tmp_path / 'six_hours.flac'
  with sf.SoundFile(long_source, 'w', 8000, 1, 'PCM_16', format='FLAC') as f:
    for _ in range(6 * 3600 * 8000 // (1 << 20) + 1):
      f.write(np.zeros(1 << 20, np.int16))
  result = _main(
    '--mode=convert',
    f'--workdir={workdir}',
    f'--source={long_source}',
    f'--target={references}',
    f'--output={tmp_path / "long.wav"}',
  )
  assert result.returncode == 1 and f'error: {long_source}: lasts 6.0 h;' in result.stderr
  tracemalloc.start()
  with pytest.raises(errors.AudioError, match='lasts 6.0 h'):
    audio.load(str(long_source))
  assert tracemalloc.get_traced_memory()[1] < 64 << 20
  tracemalloc.stop()
