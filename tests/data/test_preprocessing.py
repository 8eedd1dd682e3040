"""preprocess.py on real files: features, the split, statistics, the manifest, resuming, bad input."""

import json
import os
import subprocess
import sys

import librosa
import numpy as np
import pytest
import soundfile as sf

from skipvqvc_jax.core import errors
from skipvqvc_jax.data import audio, corpus, preprocessing
from tests import audio_fixtures
from tests.conftest import REPO, parity_file, run_in_repo


def independent_log_mel(path):
  """The reference recipe written with librosa's own STFT, resampler and trim, not our code."""
  y, sr = sf.read(path, dtype='float32', always_2d=True)
  y = librosa.resample(y.mean(axis=1), orig_sr=sr, target_sr=22050, res_type='soxr_hq')
  y, _ = librosa.effects.trim(y, top_db=20)
  y = np.pad(y, (384, 384), mode='reflect')
  spec = np.abs(
    librosa.stft(y, n_fft=1024, hop_length=256, win_length=1024, window='hann', center=False)
  )
  basis = librosa.filters.mel(sr=22050, n_fft=1024, n_mels=80, fmin=0.0, fmax=None)
  return np.log10(np.maximum(basis @ spec, 1e-5))


def test_good_files_match_an_independent_librosa_computation(tree, processed):
  root, files = tree
  out, manifest, _ = processed
  made = {item['source']: item['file'] for item in manifest['items']}
  assert sorted(made) == sorted(k for k, v in files.items() if v == 'ok')
  for source, rel in made.items():
    mel = np.load(os.path.join(out, rel))
    assert mel.dtype == np.float32 and mel.shape[0] == 80
    if source.endswith('.mp3'):
      continue  # mp3 decoders pad differently; this one only has to decode and have speech length
    expected = independent_log_mel(os.path.join(root, source))
    assert mel.shape == expected.shape, source
    assert np.abs(mel - expected).max() < 1e-4, source


def test_feature_names_split_and_speaker_prefix(processed):
  out, manifest, _ = processed
  assert sorted(os.listdir(os.path.join(out, 'test'))) == ['bob_take1.npy', 'bob_take2.npy']
  assert 'alice_001.npy' in os.listdir(os.path.join(out, 'train'))  # not alice_alice_001
  split = json.load(open(os.path.join(out, 'split.json')))
  assert split['test'] == ['bob'] and not set(split['train']) & set(split['test'])
  assert manifest['split'] == {'train': split['train'], 'test': split['test']}
  assert manifest['totals']['test']['utterances'] == 2


def test_bad_files_are_listed_with_reasons(tree, processed):
  _, files = tree
  _, manifest, logs = processed
  reasons = {s['source']: s['reason'] for s in manifest['skipped']}
  assert sorted(reasons) == sorted(k for k, v in files.items() if v != 'ok')
  for source, reason in reasons.items():
    assert files[source] in reason, (source, reason)
    assert '\n' not in reason
  assert (
    'too short: ' in reasons['carol/carol_002.wav']
    and '--min_frames=100' in reasons['carol/carol_002.wav']
  )
  assert any(line.startswith('skipped dave/dave_003.wav: cannot decode') for line in logs)


def test_second_run_redoes_nothing_and_an_interrupted_run_finishes(tree, processed, monkeypatch):
  root, _ = tree
  out, manifest, _ = processed
  mtimes = {i['file']: os.stat(os.path.join(out, i['file'])).st_mtime_ns for i in manifest['items']}
  decoded = []
  real_load = audio.load
  monkeypatch.setattr(audio, 'load', lambda path, *a: decoded.append(path) or real_load(path, *a))
  again = preprocessing.preprocess(
    root, out, test_speakers=['bob'], workers=1, progress=False, log=lambda _: None
  )
  assert decoded == []  # neither finished features nor known-bad files are decoded again
  assert again['items'] == manifest['items'] and again['skipped'] == manifest['skipped']
  assert mtimes == {f: os.stat(os.path.join(out, f)).st_mtime_ns for f in mtimes}
  # An interruption: one feature never written, and no manifest yet.
  os.remove(os.path.join(out, 'train', 'alice_002.npy'))
  os.remove(os.path.join(out, 'manifest.json'))
  resumed = preprocessing.preprocess(root, out, workers=1, progress=False, log=lambda _: None)
  redone = {os.path.relpath(p, root) for p in decoded}
  assert 'alice/alice_002.flac' in redone
  assert not redone & {'alice/alice_001.wav', 'bob/take1.wav', 'carol/carol_001.flac'}
  assert [i['file'] for i in resumed['items']] == [i['file'] for i in manifest['items']]
  assert not [f for f in os.listdir(os.path.join(out, 'train')) if not f.endswith('.npy')]


def test_changed_split_or_parameters_are_refused(tree, processed):
  root, _ = tree
  out, _, _ = processed
  with pytest.raises(errors.CorpusError, match='split.json lists test speakers'):
    preprocessing.preprocess(root, out, test_speakers=['alice'], progress=False)
  with pytest.raises(errors.CorpusError, match='n_mels: 80 != 40'):
    preprocessing.preprocess(root, out, audio.FeatureParams(n_mels=40), progress=False)
  corpus.check_feature_params(out, audio.FeatureParams())
  with pytest.raises(errors.CorpusError, match=r'hop_length: 256 != 200.*manifest vs config'):
    corpus.check_feature_params(out, audio.FeatureParams(hop_length=200))


def test_feature_golden(parity_dir):
  golden = np.load(parity_file(parity_dir, 'features.npz'))
  mel, seconds = audio.file_to_log_mel(str(parity_dir / 'audio_22050.wav'))
  assert mel.shape == golden['mel/logmel_trim'].shape
  assert np.abs(mel - golden['mel/logmel_trim']).max() <= 1e-4
  y = audio.load(str(parity_dir / 'audio_22050.wav'))
  assert np.abs(audio.log_mel(y) - golden['mel/logmel']).max() <= 1e-4
  assert audio.trim(y)[1] == tuple(golden['audio/trim_index'])
  assert seconds == pytest.approx(34304 / 22050)


def _cli(*args):
  return run_in_repo(
    [sys.executable, 'preprocess.py', *map(str, args), '--noprogress'],
    timeout=300,
  )


def test_cli_errors_are_one_line(tmp_path):
  missing = _cli(tmp_path / 'nope', tmp_path / 'out')
  assert missing.returncode == 1
  assert (
    missing.stderr.strip()
    == f'error: input dir {tmp_path / "nope"} does not exist or is not a folder'
  )
  (tmp_path / 'empty').mkdir()
  empty = _cli(tmp_path / 'empty', tmp_path / 'out')
  assert empty.returncode == 1 and 'is empty' in empty.stderr
  bad = tmp_path / 'bad' / 'spk'
  bad.mkdir(parents=True)
  (bad / 'a.wav').write_bytes(b'not a wav at all')
  nothing = _cli(tmp_path / 'bad', tmp_path / 'out2')
  assert nothing.returncode == 1
  assert 'error: no usable audio' in nothing.stderr and 'skipped spk/a.wav' in nothing.stdout


def test_cli_runs_on_a_vctk_layout(tmp_path):
  for speaker in ('p225', 'p226', 'p227'):
    for i in (1, 2):
      path = tmp_path / 'VCTK' / 'wav48' / speaker / f'{speaker}_{i:03d}.wav'
      path.parent.mkdir(parents=True, exist_ok=True)
      sf.write(path, audio_fixtures.voiced(1.5, 48000, 100 + 20 * i), 48000)
  (tmp_path / 'VCTK' / 'txt').mkdir()
  result = _cli(tmp_path / 'VCTK', tmp_path / 'out', '--test_speakers=p227', '--workers=1')
  assert result.returncode == 0, result.stderr
  assert sorted(os.listdir(tmp_path / 'out' / 'test')) == ['p227_001.npy', 'p227_002.npy']
  assert 'train 2 speakers, 4 utterances' in result.stdout
  last = result.stdout.strip().splitlines()[-1]  # what to do next, with this output's train folder
  assert last.startswith('next: train with python main.py --config=configs/vqvc_plus.py:')
  assert f'--config.data.train_dir={tmp_path / "out" / "train"}' in last


def _children(pid: int) -> set[int]:
  found = set()
  for task in os.listdir(f'/proc/{pid}/task'):
    with open(f'/proc/{pid}/task/{task}/children') as f:
      found |= {int(p) for p in f.read().split()}
  return found


def _alive(pid: int) -> bool:
  try:
    with open(f'/proc/{pid}/stat') as f:
      return f.read().split(')')[-1].split()[0] != 'Z'  # a zombie has ended
  except FileNotFoundError:
    return False


@pytest.mark.parametrize('how', ['SIGTERM', 'SIGKILL'])
def test_killing_preprocessing_ends_its_workers(tmp_path, how):
  """The main process killed mid-run: its workers end within seconds and write nothing more (they
  once went on, re-parented to init, then sat blocked for 24+ minutes). SIGTERM, like Ctrl-C, also
  stops the pool itself and says so in one line."""
  import signal
  import time

  corpus_dir = tmp_path / 'corpus'
  for speaker in ('awb', 'slt'):  # 2 x 150 links to the demo corpus: minutes of work for 2 workers
    files = sorted((REPO / 'data' / 'demo_corpus' / speaker).glob('*.ogg'))
    (corpus_dir / speaker).mkdir(parents=True)
    for i in range(150):
      (corpus_dir / speaker / f'{speaker}_{i:03d}.ogg').symlink_to(files[i % len(files)])
  out = tmp_path / 'features'
  proc = subprocess.Popen(
    [sys.executable, 'preprocess.py', str(corpus_dir), str(out), '--workers=2', '--noprogress'],
    cwd=REPO,
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  )
  deadline = time.time() + 240
  while not list(out.glob('*/*.npy')) and time.time() < deadline:
    time.sleep(0.2)
  workers = _children(proc.pid)
  assert len(workers) >= 2 and proc.poll() is None
  proc.send_signal(getattr(signal, how))
  _, stderr = proc.communicate(timeout=120)
  deadline = time.time() + 10
  while any(_alive(w) for w in workers) and time.time() < deadline:
    time.sleep(0.2)
  assert not [w for w in workers if _alive(w)], 'workers outlived their parent'
  written = len(list(out.glob('*/*.npy')))
  time.sleep(3)
  assert len(list(out.glob('*/*.npy'))) == written < 300  # nothing written after the end
  if how == 'SIGTERM':
    assert proc.returncode == 1 and 'Traceback' not in stderr, stderr[-3000:]
    assert stderr.strip().splitlines()[-1].startswith('error: preprocessing of ')
    assert 'run the same command to continue' in stderr


def test_a_second_preprocessing_into_one_folder_is_refused(tmp_path):
  """Two runs into one output folder (one with --test_speakers, one with the default split) once
  mixed test speakers into train/ and left a manifest listing 240 of 336 files on disk. The second
  is refused in one line naming the first; a run killed with SIGKILL leaves a lock that is taken over."""
  import signal
  import time

  corpus_dir = tmp_path / 'corpus'
  for speaker in ('awb', 'slt', 'rms'):
    files = sorted((REPO / 'data' / 'demo_corpus' / speaker).glob('*.ogg'))
    (corpus_dir / speaker).mkdir(parents=True)
    for i in range(40):
      (corpus_dir / speaker / f'{speaker}_{i:03d}.ogg').symlink_to(files[i % len(files)])
  out = tmp_path / 'features'
  run = lambda *flags: subprocess.Popen(
    [sys.executable, 'preprocess.py', str(corpus_dir), str(out), '--noprogress', *flags],
    cwd=REPO,
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  )
  first = run('--workers=2', '--test_speakers=awb')
  deadline = time.time() + 240
  while not list(out.glob('*/*.npy')) and time.time() < deadline:
    time.sleep(0.2)
  second = run('--workers=1')
  _, stderr = second.communicate(timeout=300)
  assert second.returncode == 1 and first.poll() is None, stderr[-2000:]
  assert stderr.strip().splitlines()[-1].startswith(f'error: {out} is in use by another run (pid ')
  assert 'write to another output folder' in stderr
  first.send_signal(signal.SIGKILL)  # a lock left behind by a dead run ...
  first.wait(timeout=60)
  again = run('--workers=2', '--test_speakers=awb')  # ... is taken over, and the run completes
  _, stderr = again.communicate(timeout=600)
  assert again.returncode == 0, stderr[-3000:]
  manifest = json.loads((out / 'manifest.json').read_text())
  on_disk = sorted(str(p.relative_to(out)) for p in out.glob('*/*.npy'))
  assert sorted(i['file'] for i in manifest['items']) == on_disk and len(on_disk) == 120
  assert not list((out / 'train').glob('awb_*'))  # the test speaker only in test/
