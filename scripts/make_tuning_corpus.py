"""Synthesises a multi-speaker corpus with transcripts to tune recipes on, from Debian's synthesisers.

    apt-get install espeak-ng flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts
    python scripts/make_tuning_corpus.py --out=corpora/tuning            # 27 speakers x 100 sentences
    python preprocess.py corpora/tuning features/tuning --test_speakers=...   # the line it prints

27 speakers: 4 flite and 3 festival voices, two WORLD transformations of each (F0 and formants moved:
14 copies, not new voices), and 6 eSpeak NG voices. Every voice reads the same sentences (a parallel corpus: each conversion can
be scored against the target voice's own reading), made from word lists by a seeded generator, so
anyone gets the same corpus. The layout is LibriTTS's (`<speaker>/<chapter>/<utterance>.ogg` beside
`<utterance>.normalized.txt`), which preprocessing reads with its transcripts. Seven voices are held
out for testing (a flite and a festival voice with their transformations, and an eSpeak NG voice,
chosen by the seed): evaluation then converts between voices training never heard. `corpus.json`
records the voices, the sentences' seed and the test speakers. About 75 MB of Ogg Vorbis at 22050 Hz,
made in about 15 minutes on 2 cores. The transformed voices need pyworld (`pip install -e
".[listen]"`).

Licences: espeak-ng is GPL-3.0 and flite and festival are BSD-style (CMU and Edinburgh), their voices
under the same terms; the licence of a program does not extend to speech it produces, and the sentences
are generated here, so the corpus can be shared freely.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile

import numpy as np

SAMPLE_RATE = 22050

# Word lists for the sentence generator: common words a recogniser's dictionary holds.
SUBJECTS = [
  'the old man',
  'my sister',
  'a young doctor',
  'the tall teacher',
  'our neighbour',
  'the little girl',
  'a tired farmer',
  'the quiet student',
  'his brother',
  'the new driver',
  'a friendly nurse',
  'the angry cook',
  'her father',
  'the busy baker',
  'a small boy',
  'the proud captain',
]
VERBS = [
  'carried',
  'painted',
  'found',
  'opened',
  'cleaned',
  'moved',
  'watched',
  'bought',
  'fixed',
  'lost',
  'dropped',
  'pushed',
  'counted',
  'closed',
  'washed',
  'sold',
  'kept',
  'brought',
  'followed',
  'checked',
]
OBJECTS = [
  'the heavy box',
  'a red chair',
  'the wooden door',
  'six green apples',
  'the broken clock',
  'a large map',
  'the silver key',
  'two white cups',
  'the empty basket',
  'a yellow coat',
  'the kitchen window',
  'three old letters',
  'the black car',
  'a warm blanket',
  'the garden gate',
]
PLACES = [
  'near the river',
  'before dinner',
  'in the morning',
  'after the storm',
  'behind the station',
  'at the market',
  'during the night',
  'by the window',
  'on the hill',
  'after school',
  'in the small village',
  'next to the bridge',
  'before the rain',
  'at the end of the road',
]

# speaker -> (engine family, command reading {text} into {wav}). Names avoid '_', the separator of
# feature names. The eSpeak NG voices differ in accent, variant, pitch and rate; a recogniser trained on
# real speech understands them poorly (pocketsphinx: word error rate about 0.9, flite and festival about
# 0.2), so they are fewer, and the rest are flite and festival voices and WORLD transformations of them.
ESPEAK = [
  ('en-us+m1', 40, 150),
  ('en-us+m3', 30, 145),
  ('en-us+f2', 65, 145),
  ('en-us+klatt2', 50, 140),
  ('en-gb+f3', 68, 148),
  ('en-us+klatt3', 58, 140),
]
BASE = {
  **{
    f'flite{name}': ('flite', ['flite', '-voice', voice, '-t', '{text}', '-o', '{wav}'])
    for name, voice in (('awb', 'awb'), ('rms', 'rms'), ('slt', 'slt'), ('kal', 'kal16'))
  },
  **{
    f'fest{name}': (
      'festival',
      ['text2wave', '-eval', f'(voice_{voice})', '-o', '{wav}', '{textfile}'],
    )
    for name, voice in (
      ('kal', 'kal_diphone'),
      ('ked', 'ked_diphone'),
      ('slt', 'cmu_us_slt_arctic_hts'),
    )
  },
  **{
    f'espeak{i:02d}': (
      'espeak-ng',
      ['espeak-ng', '-v', voice, '-p', str(pitch), '-s', str(rate), '-w', '{wav}', '{text}'],
    )
    for i, (voice, pitch, rate) in enumerate(ESPEAK, 1)
  },
}
# New speakers from the intelligible voices: WORLD analysis, F0 scaled by `f0`, the spectral envelope's
# frequency axis scaled by `formants` (above 1: a shorter vocal tract), WORLD synthesis. Each pair of
# ratios moves both register and timbre, so the variant is another voice to a speaker encoder.
TRANSFORMS = {'a': (1.25, 1.12), 'b': (0.82, 0.9)}
VOICES = {
  **BASE,
  **{
    f'{base}{tag}': (BASE[base][0], BASE[base][1], ratios)
    for base in BASE
    if BASE[base][0] != 'espeak-ng'
    for tag, ratios in TRANSFORMS.items()
  },
}
# Held out for testing: one flite and one festival voice with their WORLD transformations (a held-out
# voice's variant in training would leak its timbre), and one eSpeak NG voice: 7 of 27.
TEST_PER_FAMILY = {'flite': 1, 'festival': 1, 'espeak-ng': 1}
# The judge (`--judge`): two families held out whole, of which only the voices pocketsphinx understands
# through Griffin-Lim are tested (ceilings 0.17-0.30 in benchmarks/voice_ceilings.py, against 0.40 and
# 0.83 for the two left out, and 0.69-0.96 for every eSpeak NG voice), so a study can tell recipes apart.
JUDGE_TEST = ('festslt', 'festsltb', 'fliterms', 'flitermsa')
JUDGE_LEFT_OUT = ('festslta', 'flitermsb')  # held out too (copies of tested voices), but not tested


def sentences(count: int, seed: int) -> list[str]:
  """`count` different sentences from the word lists, the same for a given seed."""
  rng = random.Random(seed)
  made: list[str] = []
  while len(made) < count:
    text = f'{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)} {rng.choice(PLACES)}.'
    text = text[0].upper() + text[1:]
    if text not in made:
      made.append(text)
  return made


def test_speakers(voices: list[str], seed: int) -> list[str]:
  """The held-out voices: per engine family, seeded base voices with their transformations."""
  rng = random.Random(seed)
  chosen = []
  for family, count in TEST_PER_FAMILY.items():
    bases = sorted(v for v in voices if v in BASE and BASE[v][0] == family)
    for base in rng.sample(bases, min(count, max(0, len(bases) - 1))):
      chosen += [v for v in voices if v == base or (v not in BASE and v.startswith(base))]
  return sorted(chosen)


def make_judge(corpus: str, out: str) -> list[str]:
  """The judge's corpus in `out`: every voice of `corpus` but JUDGE_LEFT_OUT, as links to its files
  (the same layout); returns the voices to hold out for testing, JUDGE_TEST."""
  for voice in sorted(os.listdir(corpus)):
    chapter = os.path.join(corpus, voice, '1')
    if voice in JUDGE_LEFT_OUT or not os.path.isdir(chapter):
      continue
    os.makedirs(os.path.join(out, voice, '1'), exist_ok=True)
    for name in sorted(os.listdir(chapter)):
      link = os.path.join(out, voice, '1', name)
      if not os.path.lexists(link):
        os.symlink(os.path.abspath(os.path.join(chapter, name)), link)
  return list(JUDGE_TEST)


def transformed(y: np.ndarray, f0_ratio: float, formant_ratio: float) -> np.ndarray:
  """y with its F0 and its formants moved (WORLD analysis and synthesis, pyworld)."""
  import pyworld  # pylint: disable=import-outside-toplevel

  x = np.asarray(y, np.float64)
  f0, envelope, aperiodicity = pyworld.wav2world(x, SAMPLE_RATE)
  bins = np.arange(envelope.shape[1])
  source = np.clip(bins / formant_ratio, 0, bins[-1])  # what each new bin takes from the old axis
  warp = lambda a: np.stack([np.interp(source, bins, frame) for frame in a])
  out = pyworld.synthesize(f0 * f0_ratio, warp(envelope), warp(aperiodicity), SAMPLE_RATE)
  return out.astype(np.float32)


def _say(job) -> str | None:
  """One utterance: synthesise, resample to 22050 Hz, peak -1 dBFS, Ogg Vorbis. None, or an error."""
  import librosa  # pylint: disable=import-outside-toplevel
  import soundfile as sf  # pylint: disable=import-outside-toplevel

  speaker, text, out = job
  with tempfile.TemporaryDirectory() as tmp:
    wav, textfile = os.path.join(tmp, 'say.wav'), os.path.join(tmp, 'say.txt')
    with open(textfile, 'w') as f:
      f.write(text)
    command = [a.format(text=text, wav=wav, textfile=textfile) for a in VOICES[speaker][1]]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if result.returncode or not os.path.exists(wav):
      return f'{speaker}: {" ".join(command[:3])} failed: {result.stderr.strip()[-300:]}'
    y, sr = sf.read(wav, dtype='float32', always_2d=True)
  y = y.mean(axis=1)
  if sr != SAMPLE_RATE:
    y = librosa.resample(y, orig_sr=sr, target_sr=SAMPLE_RATE)
  if len(VOICES[speaker]) > 2:
    y = transformed(y, *VOICES[speaker][2])
  y = y * (10 ** (-1 / 20) / max(float(np.abs(y).max()), 1e-6))
  sf.write(out + '.ogg', y, SAMPLE_RATE, format='OGG', subtype='VORBIS')
  with open(out + '.normalized.txt', 'w') as f:
    f.write(text)
  return None


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--out', default='corpora/tuning')
  parser.add_argument('--sentences', type=int, default=100)
  parser.add_argument('--voices', type=int, default=len(VOICES), help='the first N of the table')
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--workers', type=int, default=os.cpu_count())
  parser.add_argument(
    '--judge',
    default='',
    help='also link the judge corpus (voices the recogniser understands) here',
  )
  args = parser.parse_args(argv)
  voices = list(VOICES)[: args.voices] if args.voices < len(VOICES) else list(VOICES)
  missing = sorted({VOICES[v][1][0] for v in voices if shutil.which(VOICES[v][1][0]) is None})
  if missing:
    print(
      f'error: {", ".join(missing)} not found: apt-get install espeak-ng flite festival '
      f'festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts',
      file=sys.stderr,
    )
    return 1
  said = sentences(args.sentences, args.seed)
  jobs = []
  for speaker in voices:
    folder = os.path.join(args.out, speaker, '1')
    os.makedirs(folder, exist_ok=True)
    for i, text in enumerate(said, 1):
      out = os.path.join(folder, f'{speaker}_{i:03d}')
      if not os.path.exists(out + '.normalized.txt'):  # a rerun makes only what is missing
        jobs.append((speaker, text, out))
  failures = []
  with concurrent.futures.ProcessPoolExecutor(max(1, args.workers)) as pool:
    for done, error in enumerate(pool.map(_say, jobs, chunksize=8), 1):
      if error:
        failures.append(error)
      if done % 200 == 0 or done == len(jobs):
        print(f'{done}/{len(jobs)} utterances', flush=True)
  if failures:
    print(f'error: {len(failures)} utterances failed, e.g. {failures[0]}', file=sys.stderr)
    return 1
  held_out = test_speakers(voices, args.seed)
  with open(os.path.join(args.out, 'corpus.json'), 'w') as f:
    json.dump(
      dict(
        voices={
          v: dict(
            engine=VOICES[v][0],
            command=' '.join(VOICES[v][1]),
            **(
              dict(world_f0_ratio=VOICES[v][2][0], world_formant_ratio=VOICES[v][2][1])
              if len(VOICES[v]) > 2
              else {}
            ),
          )
          for v in voices
        },
        sentences=len(said),
        seed=args.seed,
        test_speakers=held_out,
        sample_rate=SAMPLE_RATE,
      ),
      f,
      indent=1,
    )
  print(
    f'{args.out}: {len(voices)} voices x {len(said)} sentences; held out for testing: '
    f'{", ".join(held_out)}\nnext: python preprocess.py {args.out} features/tuning '
    f'--test_speakers={",".join(held_out)}'
  )
  if args.judge:
    tested = make_judge(args.out, args.judge)
    print(
      f'{args.judge}: the judge (left out: {", ".join(JUDGE_LEFT_OUT)})\nnext: python preprocess.py '
      f'{args.judge} features/judge --test_speakers={",".join(tested)}'
    )
  return 0


if __name__ == '__main__':
  sys.exit(main())
