"""Small real audio files for tests: voiced-like harmonic chirps written with soundfile."""

import os

import numpy as np
import soundfile as sf


def voiced(seconds: float, sr: int, f0: float = 120.0, seed: int = 0) -> np.ndarray:
  """A harmonic chirp with silence either side (so trimming has something to remove)."""
  rng = np.random.default_rng(seed)
  t = np.arange(int(seconds * sr)) / sr
  f = f0 * (1 + 0.5 * t / max(seconds, 1e-3))
  phase = 2 * np.pi * np.cumsum(f) / sr
  y = sum(np.sin(k * phase) / k for k in range(1, 10)) * 0.3 * np.sin(np.pi * t / seconds) ** 0.5
  y = y + rng.normal(0, 0.003, y.shape)
  silence = rng.normal(0, 1e-4, int(0.2 * sr))
  return np.concatenate([silence, y, silence]).astype(np.float32)


def write_tree(root: str) -> dict[str, str]:
  """A tiny corpus with every kind of good and bad file; returns {relative path: expected outcome}."""
  files = {}

  def put(rel, data, sr, expect, **kw):
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    sf.write(path, data, sr, **kw)
    files[rel] = expect

  put('alice/alice_001.wav', voiced(1.6, 22050, 110, 1), 22050, 'ok')
  put('alice/alice_002.flac', voiced(1.8, 16000, 115, 2), 16000, 'ok')
  stereo = np.stack([voiced(1.7, 48000, 200, 3), voiced(1.7, 48000, 200, 4)], axis=1)
  put('bob/take1.wav', stereo, 48000, 'ok')
  put('bob/take2.ogg', voiced(1.5, 44100, 210, 5), 44100, 'ok')
  put('carol/carol_001.flac', voiced(2.0, 24000, 150, 6), 24000, 'ok')
  put('carol/carol_002.wav', voiced(0.5, 22050, 150, 7), 22050, 'too short')
  put('carol/carol_003.wav', np.zeros(22050 * 2, np.float32), 22050, 'silent')
  put('dave/dave_001.mp3', voiced(1.6, 22050, 95, 8), 22050, 'ok')
  put('dave/dave_002.wav', voiced(1.6, 22050, 95, 9), 22050, 'ok')
  with open(os.path.join(root, 'dave', 'dave_003.wav'), 'wb') as f:
    f.write(b'RIFF\x00\x01\x00\x00WAVEfmt garbage' + os.urandom(300))
  files['dave/dave_003.wav'] = 'cannot decode'
  open(os.path.join(root, 'dave', 'dave_004.flac'), 'wb').close()
  files['dave/dave_004.flac'] = 'empty'
  with open(os.path.join(root, 'dave', 'notes.txt'), 'w') as f:
    f.write('not audio')
  files['dave/notes.txt'] = 'not an audio file'
  return files
