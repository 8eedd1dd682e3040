"""Corpus layouts on disk, as the real corpora name their files: VCTK 0.80 and 0.92, LibriTTS,
LibriSpeech, deeper trees, the original's feature names; and parallel pairs that say the same text."""

import os

import numpy as np
import soundfile as sf

from skipvqvc_jax.core import fileio
from skipvqvc_jax.data import corpus, layouts, preprocessing
from skipvqvc_jax.evaluation import pairs as eval_pairs
from tests import audio_fixtures

QUIET = dict(workers=1, progress=False, log=lambda _: None)


def _audio(path, seed=0):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  sf.write(path, audio_fixtures.voiced(1.6, 22050, 100 + 10 * seed, seed), 22050)


def _text(path, text):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'w') as f:
    f.write(text + '\n')


def _speakers_and_files(manifest):
  return (
    {s for s in manifest['speakers']},
    sorted(os.path.basename(i['file']) for i in manifest['items']),
  )


def test_vctk_092_reads_one_microphone_with_transcripts(tmp_path):
  root = tmp_path / 'VCTK-Corpus-0.92'
  for k, speaker in enumerate(('p225', 'p226', 'p227')):
    for n in (1, 2):
      for mic in ('mic1', 'mic2'):
        _audio(str(root / 'wav48_silence_trimmed' / speaker / f'{speaker}_00{n}_{mic}.flac'), k + n)
      _text(str(root / 'txt' / speaker / f'{speaker}_00{n}.txt'), f'Sentence {n} of {speaker}.')
  manifest = preprocessing.preprocess(
    str(root), str(tmp_path / 'out'), test_speakers=['p227'], **QUIET
  )
  assert manifest['layout'] == dict(name='vctk-0.92', speaker_depth=1, mic='mic1')
  speakers, files = _speakers_and_files(manifest)
  assert speakers == {'p225', 'p226', 'p227'} and len(files) == 6  # mic1 only: half the data
  assert 'p225_001.npy' in files
  item = next(i for i in manifest['items'] if i['file'].endswith('p226_002.npy'))
  assert item['source'] == os.path.join('p226', 'p226_002_mic1.flac')
  assert item['transcript'] == 'Sentence 2 of p226.'
  mic2 = preprocessing.preprocess(
    str(root),
    str(tmp_path / 'out2'),
    test_speakers=['p227'],
    layout=layouts.Options(mic='mic2'),
    **QUIET,
  )
  assert {i['source'].endswith('_mic2.flac') for i in mic2['items']} == {True}


def test_vctk_080(tmp_path):
  root = tmp_path / 'VCTK-Corpus'
  for k, speaker in enumerate(('p225', 'p226')):
    _audio(str(root / 'wav48' / speaker / f'{speaker}_001.wav'), k)
    _text(str(root / 'txt' / speaker / f'{speaker}_001.txt'), 'Please call Stella.')
  manifest = preprocessing.preprocess(
    str(root), str(tmp_path / 'out'), test_speakers=['p226'], **QUIET
  )
  assert manifest['layout']['name'] == 'vctk-0.80'
  assert [i['transcript'] for i in manifest['items']] == ['Please call Stella.'] * 2


def test_libritts_speakers_are_top_folders_not_chapters(tmp_path):
  root = tmp_path / 'LibriTTS'
  for k, (speaker, chapters) in enumerate(
    (('8419', ('286667', '293469')), ('103', ('1240',)), ('1034', ('121119',)))
  ):
    for chapter in chapters:
      stem = f'{speaker}_{chapter}_000001_000000'
      folder = root / 'train-clean-100' / speaker / chapter
      _audio(str(folder / f'{stem}.wav'), k)
      _text(str(folder / f'{stem}.normalized.txt'), f'Text of chapter {chapter}.')
      _text(str(folder / f'{stem}.original.txt'), f'Text of chapter {chapter}!')
  logs = []
  manifest = preprocessing.preprocess(
    str(root),
    str(tmp_path / 'out'),
    test_speakers=['1034'],
    workers=1,
    progress=False,
    log=logs.append,
  )
  assert manifest['layout']['name'] == 'libritts'
  assert not [line for line in logs if 'renamed' in line]  # chapter folders are not speakers
  speakers, files = _speakers_and_files(manifest)
  assert speakers == {'8419', '103', '1034'}  # not the chapters 286667, 293469, ...
  assert manifest['speakers']['8419']['utterances'] == 2
  assert {i['transcript'] for i in manifest['items'] if i['speaker'] == '8419'} == {
    'Text of chapter 286667.',
    'Text of chapter 293469.',
  }


def test_librispeech_transcripts_from_the_chapter_file(tmp_path):
  root = tmp_path / 'LibriSpeech' / 'dev-clean'
  for k, speaker in enumerate(('84', '174')):
    folder = root / speaker / '121123'
    lines = []
    for n in (1, 2):
      _audio(str(folder / f'{speaker}-121123-000{n}.flac'), k + n)
      lines.append(f'{speaker}-121123-000{n} WORDS OF LINE {n}')
    _text(str(folder / f'{speaker}-121123.trans.txt'), '\n'.join(lines))
  manifest = preprocessing.preprocess(
    str(root.parent), str(tmp_path / 'out'), test_speakers=['174'], **QUIET
  )
  assert manifest['layout']['name'] == 'librispeech'
  assert _speakers_and_files(manifest)[0] == {'84', '174'}
  assert (
    sorted(i['transcript'] for i in manifest['items'])
    == ['WORDS OF LINE 1'] * 2 + ['WORDS OF LINE 2'] * 2
  )


def test_speaker_depth_names_deeper_folders(tmp_path):
  root = tmp_path / 'corpus'
  for k, (group, speaker) in enumerate((('women', 'ann'), ('women', 'eve'), ('men', 'bob'))):
    _audio(str(root / group / speaker / f'{speaker}_1.wav'), k)
  by_top = preprocessing.preprocess(str(root), str(tmp_path / 'a'), test_speakers=['men'], **QUIET)
  assert _speakers_and_files(by_top)[0] == {'women', 'men'}
  deeper = preprocessing.preprocess(
    str(root),
    str(tmp_path / 'b'),
    test_speakers=['bob'],
    layout=layouts.Options(speaker_depth=2),
    **QUIET,
  )
  assert _speakers_and_files(deeper)[0] == {'ann', 'eve', 'bob'}
  assert deeper['layout'] == dict(name='flat', speaker_depth=2, mic=None)


def test_features_named_by_the_original_preprocessing():
  assert corpus.speaker_of('/x/wav48_p225_001.npy') == 'p225'
  assert corpus.speaker_of('/x/wav48_silence_trimmed_p226_003.npy') == 'p226'
  assert corpus.speaker_of('/x/p225_001.npy') == 'p225'


def test_parallel_pairs_need_the_same_text_not_the_same_number(tmp_path):
  """VCTK's numbers beyond the first few dozen are different newspaper sentences per speaker."""
  root = tmp_path / 'VCTK-Corpus'
  texts = {
    ('p225', 1): 'Please call Stella.',
    ('p226', 1): 'Please call Stella.',
    ('p225', 2): 'The rainbow is a division.',
    ('p226', 2): 'A different news story.',
    ('p225', 3): 'Third of p225.',
    ('p226', 3): 'Third of p226.',
  }
  for (speaker, n), text in texts.items():
    _audio(str(root / 'wav48' / speaker / f'{speaker}_00{n}.wav'), n)
    _text(str(root / 'txt' / speaker / f'{speaker}_00{n}.txt'), text)
  _audio(str(root / 'wav48' / 'p227' / 'p227_001.wav'), 9)
  preprocessing.preprocess(
    str(root), str(tmp_path / 'out'), test_speakers=['p225', 'p226'], **QUIET
  )
  files = sorted(str(p) for p in (tmp_path / 'out' / 'test').glob('*.npy'))
  said = eval_pairs.sentences(files)
  assert said[files[0]] == 'please call stella'  # normalised
  pairs = eval_pairs.choose_pairs(files, 40, seed=0, said=said)
  parallel = [p for p in pairs if p.parallel]
  assert parallel and len(parallel) < len(pairs)  # only sentence 1 is shared
  for pair in parallel:
    assert said[pair.source] == said[pair.parallel] == 'please call stella'
  for pair in pairs:
    assert said[pair.reference] != said[pair.source]
  assert np.load(files[0]).shape[0] == 80
  assert fileio.load_json(tmp_path / 'out' / 'manifest.json')['layout']['name'] == 'vctk-0.80'
