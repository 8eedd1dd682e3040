"""scripts/make_tuning_corpus.py: every voice of the table speaks, the corpus preprocesses with its
transcripts and held-out voices, and a recogniser understands it (the ceiling the evaluation needs)."""

import json
import shutil
import subprocess
import sys

import pytest

from skipvqvc_jax.data import audio, preprocessing
from skipvqvc_jax.evaluation import asr, metrics
from tests.conftest import REPO

sys.path.insert(0, str(REPO / 'scripts'))
import make_tuning_corpus as script  # noqa: E402


def test_the_sentences_and_the_held_out_voices_are_the_seeds():
  assert script.sentences(100, 0) == script.sentences(100, 0) != script.sentences(100, 1)
  assert len(set(script.sentences(100, 0))) == 100
  held_out = script.test_speakers(list(script.VOICES), 0)
  assert len(script.VOICES) >= 20 and len(held_out) == 7
  assert {script.VOICES[v][0] for v in held_out} == {'flite', 'festival', 'espeak-ng'}
  # A held-out voice's transformations are held out with it: training never hears its timbre.
  for voice in held_out:
    if voice not in script.BASE:
      assert voice[:-1] in held_out
  # The judge holds its families out whole too: tested or left out, never trained on.
  judged = set(script.JUDGE_TEST) | set(script.JUDGE_LEFT_OUT)
  families = {v for v in script.VOICES for base in judged if v.startswith(base.rstrip('ab'))}
  assert families == judged and all(script.VOICES[v][0] != 'espeak-ng' for v in judged)


def test_every_voice_speaks_and_the_corpus_preprocesses_with_transcripts(tmp_path):
  engines = {voice[1][0] for voice in script.VOICES.values()}
  missing = [e for e in engines if shutil.which(e) is None]
  if missing:
    pytest.skip(f'{missing} not installed (.ci/run installs them with apt)')
  out = tmp_path / 'tuning'
  result = subprocess.run(
    [
      sys.executable,
      str(REPO / 'scripts' / 'make_tuning_corpus.py'),
      f'--out={out}',
      '--sentences=2',
      '--workers=2',
      f'--judge={tmp_path / "judge"}',
    ],
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  described = json.loads((out / 'corpus.json').read_text())
  assert sorted(described['voices']) == sorted(script.VOICES)
  assert f'--test_speakers={",".join(described["test_speakers"])}' in result.stdout
  said = script.sentences(2, 0)
  for voice in script.VOICES:
    for i, text in enumerate(said, 1):
      assert (out / voice / '1' / f'{voice}_{i:03d}.normalized.txt').read_text() == text
  manifest = preprocessing.preprocess(
    str(out),
    str(tmp_path / 'features'),
    test_speakers=described['test_speakers'],
    workers=2,
    progress=False,
    log=lambda _: None,
  )
  assert manifest['layout']['name'] == 'libritts'
  assert [s['source'] for s in manifest['skipped']] == ['corpus.json']  # not audio, said so
  assert all(item['transcript'] in said for item in manifest['items'])
  assert manifest['totals']['test']['speakers'] == 7
  assert len(manifest['items']) == 2 * len(script.VOICES)
  assert f'--test_speakers={",".join(script.JUDGE_TEST)}' in result.stdout
  judged = preprocessing.preprocess(
    str(tmp_path / 'judge'),
    str(tmp_path / 'judge_features'),
    test_speakers=list(script.JUDGE_TEST),
    workers=2,
    progress=False,
    log=lambda _: None,
  )
  assert judged['totals']['test']['speakers'] == len(script.JUDGE_TEST)
  speakers = {item['speaker'] for item in judged['items']}
  assert len(speakers) == len(script.VOICES) - 2 and not speakers & set(script.JUDGE_LEFT_OUT)
  if asr.missing() is None:  # the voices are intelligible: the evaluation's ceiling is real
    recognise = asr.Recogniser()
    rates = [
      metrics.error_rates(
        said[0], recognise(audio.load(str(out / v / '1' / f'{v}_001.ogg')), 22050)
      )[0]
      for v in ('fliteawb', 'festkal', 'festkeda', 'flitermsb')
    ]
    assert max(rates) <= 0.5, rates
