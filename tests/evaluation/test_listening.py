"""What a listener hears, measured on audio whose answer is known: word error rates of a recogniser,
F0 agreement on a tone glide, speaker identification, and the evaluation of a run on a corpus with
transcripts (the eval figures of issue 24)."""

import json
import shutil

import numpy as np
import pytest

from skipvqvc_jax.data import audio
from skipvqvc_jax.evaluation import asr, evaluate, metrics
from skipvqvc_jax.evaluation import pairs as eval_pairs
from skipvqvc_jax.training import loop
from tests.conftest import REPO, quiet_preprocess, tiny_config

DEMO = REPO / 'data' / 'demo_corpus'
SENTENCES = dict(
  line.split(' ', 1) for line in (REPO / 'data' / 'demo_sentences.txt').read_text().splitlines()
)


def test_error_rates_count_edits_of_words_and_characters():
  assert metrics.error_rates('The cat sat.', 'the cat sat') == (0.0, 0.0)
  wer, cer = metrics.error_rates('the cat sat on the mat', 'the bat sat on mat')
  assert wer == pytest.approx(2 / 6) and cer == pytest.approx(5 / 22)  # c->b; "the " gone
  assert metrics.error_rates('three words here', '') == (1.0, 1.0)  # nothing heard: every word
  assert metrics.error_rates('one', 'one two three')[0] == 2.0  # insertions count too
  with pytest.raises(ValueError, match='no words'):
    metrics.error_rates('...', 'anything')


def _glide(f0_start: float, f0_end: float, seconds: float = 2.0, sr: int = 22050) -> np.ndarray:
  t = np.arange(int(seconds * sr)) / sr
  f0 = f0_start * (f0_end / f0_start) ** (t / seconds)  # exponential: a straight line in log-F0
  phase = 2 * np.pi * np.cumsum(f0) / sr
  return (0.3 * sum(np.sin(k * phase) / k for k in range(1, 8))).astype(np.float32)


def test_f0_of_a_tone_glide_and_its_transposition():
  pytest.importorskip('pyworld', reason='F0 needs the eval extra (pyworld)')
  glide = metrics.f0_contour(_glide(110, 220), 22050)
  voiced = glide[glide > 0]
  assert len(voiced) > 0.9 * len(glide)
  assert 100 < voiced[10] < 125 and 195 < voiced[-10] < 240  # it follows the glide
  same = metrics.f0_agreement(glide, glide)
  assert same['f0_corr'] == pytest.approx(1.0) and same['f0_rmse_cents'] == pytest.approx(0.0)
  # Two semitones up: the same contour (correlation 1), 200 cents away.
  up = metrics.f0_agreement(
    glide, metrics.f0_contour(_glide(110 * 2 ** (2 / 12), 220 * 2 ** (2 / 12)), 22050)
  )
  assert up['f0_corr'] > 0.99 and up['f0_rmse_cents'] == pytest.approx(200, abs=15)
  # A falling glide goes the other way.
  assert metrics.f0_agreement(glide, metrics.f0_contour(_glide(220, 110), 22050))['f0_corr'] < -0.9
  noise = np.random.default_rng(0).normal(0, 0.1, 44100)
  assert metrics.f0_agreement(glide, metrics.f0_contour(noise, 22050))['voiced_frames'] < 0.2 * len(
    glide
  )


def test_identification_names_the_highest_score():
  scores = np.array([[0.9, 0.1, 0.3], [0.2, 0.1, 0.8], [0.5, 0.6, 0.1]])
  assert metrics.identification(scores, np.array([0, 2, 0])) == pytest.approx(2 / 3)


@pytest.fixture(scope='module')
def recogniser():
  if asr.missing():
    pytest.skip(asr.missing())
  return asr.Recogniser()


def test_the_recogniser_hears_a_recording_and_not_noise(recogniser):
  wave = audio.load(str(DEMO / 'kal' / 'kal_001.ogg'))
  heard = recogniser(wave, 22050)
  assert metrics.error_rates(SENTENCES['001'], heard)[0] <= 0.25, heard
  noise = np.random.default_rng(0).normal(0, 0.1, 3 * 22050).astype(np.float32)
  assert metrics.error_rates(SENTENCES['001'], recogniser(noise, 22050)) == (1.0, 1.0)


@pytest.fixture(scope='module')
def transcribed_run(tmp_path_factory):
  """The demo corpus' audio in LibriTTS's layout, with its sentences as transcripts (4 speakers x 8
  utterances, two held out), preprocessed and trained for 4 steps."""
  root = tmp_path_factory.mktemp('transcribed')
  corpus = root / 'corpus'
  for speaker in ('awb', 'slt', 'kal', 'rms'):
    for i in range(1, 9):
      chapter = corpus / speaker / '1'
      chapter.mkdir(parents=True, exist_ok=True)
      name = f'{speaker}_{i:03d}'
      shutil.copy(DEMO / speaker / f'{name}.ogg', chapter / f'{name}.ogg')
      (chapter / f'{name}.normalized.txt').write_text(SENTENCES[f'{i:03d}'])
  features = root / 'features'
  quiet_preprocess(
    corpus,
    features,
    test_speakers=['kal', 'rms'],
  )
  workdir = root / 'run'
  loop.train_and_evaluate(tiny_config(features, num_train_steps=4), str(workdir))
  return workdir


def test_eval_hears_conversions_reconstructions_and_the_unconverted_source(
  transcribed_run, recogniser
):
  pytest.importorskip('pyworld', reason='F0 needs the eval extra (pyworld)')
  written = evaluate.run(
    str(transcribed_run), num_pairs=4, report_pairs=1, num_vocoder_utterances=1
  )
  heard = written['intelligibility']
  assert heard['available'] and heard['pairs'] == 4
  wer = heard['wer']
  # The unconverted source through Griffin-Lim is the ceiling: most words heard. A 4-step model's
  # conversions and reconstructions lose nearly all of them.
  assert wer['unconverted'] <= 0.5 and wer['converted'] >= wer['unconverted'] + 0.3, wer
  assert 0 <= heard['cer']['unconverted'] <= heard['cer']['converted'] <= 1.5
  f0 = written['f0']
  assert f0['available'] and f0['pairs'] == 4
  for kind in ('converted', 'reconstructed', 'real_vs_vocoded'):
    assert -1 <= f0[kind]['f0_corr'] <= 1 and f0[kind]['f0_rmse_cents'] >= 0, (kind, f0)
  # The F0 tracker on Griffin-Lim's resynthesis against the real recording: the same contour.
  assert f0['real_vs_vocoded']['f0_corr'] > 0.3
  rows = json.load(open(transcribed_run / 'eval' / 'step_4' / 'pairs.json'))
  for row in rows:
    assert set(row['heard']) == set(row['wer']) == {'converted', 'reconstructed', 'unconverted'}
    said = SENTENCES[eval_pairs.utterance_name(row['source'])]
    assert row['wer']['unconverted'] == metrics.error_rates(said, row['heard']['unconverted'])[0]
  page = (transcribed_run / 'eval' / 'step_4' / 'report.html').read_text()
  assert 'unconverted heard as' in page and 'intelligibility/wer/converted' in page
