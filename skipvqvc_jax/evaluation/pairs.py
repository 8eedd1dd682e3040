"""The conversions an evaluation makes and what it computes for each: a seeded choice of (source
utterance, target speaker, reference, parallel recording) over the test set (`choose_pairs`), each
pair's results as a `PairResult`, and the seeded per-speaker cap of the speaker statistics."""

from __future__ import annotations

import dataclasses
import os
import random
from collections.abc import Sequence

import numpy as np

from skipvqvc_jax.core.errors import CorpusError
from skipvqvc_jax.data import corpus, layouts


def utterance_name(feature_file: str) -> str:
  """The utterance part of `{speaker}_{utterance}.npy`."""
  return os.path.splitext(os.path.basename(feature_file))[0].split('_', 1)[1]


def transcripts(files: Sequence[str]) -> dict[str, str]:
  """{file: its transcript as the corpus' manifest has it}, for the files that have one."""
  by_name: dict[str, str] = {}
  for root in {corpus.manifest_root(os.path.dirname(os.path.abspath(f))) for f in files} - {None}:
    for item in corpus.read_manifest(root)['items']:
      if item.get('transcript'):
        by_name[os.path.basename(item['file'])] = item['transcript']
  return {f: by_name[os.path.basename(f)] for f in files if os.path.basename(f) in by_name}


def sentences(files: Sequence[str]) -> dict[str, str]:
  """{file: what it says}: the normalised transcript where the corpus' manifest has one; otherwise
  the utterance name (the demo corpus' speakers read the same numbered sentences; on VCTK only the
  first few dozen numbers are the same text, so its transcripts decide there)."""
  said = {f: layouts.normalise(text) for f, text in transcripts(files).items()}
  return {f: said.get(f) or 'utterance ' + utterance_name(f) for f in files}


@dataclasses.dataclass(frozen=True)
class Pair:
  """One conversion of the evaluation: a source utterance into a target speaker given by a reference
  utterance of another sentence; `parallel` is the target's own recording of the source sentence."""

  source: str
  target_speaker: str
  reference: str
  parallel: str | None


@dataclasses.dataclass
class PairResult:
  """What evaluation computed for one pair: the conversion at every decoder scale (coarsest first),
  the source's reconstruction (for the pairs the report shows) and the scores that apply."""

  pair: Pair
  converted_scales: list
  reconstruction_scales: list | None = None
  lmcd_db: float | None = None  # log-mel cepstral distortion to `parallel` (DTW)
  baseline_lmcd_db: float | None = None  # the unconverted source's
  mcd_world_db: float | None = None  # the WORLD/SPTK MCD (eval extra)
  baseline_mcd_world_db: float | None = None
  similarity_to_target: float | None = None  # speaker similarity (eval extra)
  similarity_to_source: float | None = None
  identified_as_target: bool | None = None  # the target is the nearest test speaker (eval extra)
  # What the recogniser heard (eval extra, where the corpus has transcripts) and its error rates, of
  # the conversion, the reconstruction (source -> itself) and the unconverted source, all vocoded.
  heard: dict | None = None
  wer: dict | None = None
  cer: dict | None = None
  # F0 of the conversion and of the unconverted source's resynthesis against the real source's.
  f0: dict | None = None
  converted_wave: np.ndarray | None = None  # the conversion through the evaluation's vocoder

  def converted_audio(self, vocoder) -> np.ndarray:
    """The conversion through `vocoder` (the evaluation's one), made once however many figures and
    pages hear it."""
    if self.converted_wave is None:
      self.converted_wave = vocoder(self.converted_mel)
    return self.converted_wave

  @property
  def converted_mel(self) -> np.ndarray:
    return self.converted_scales[-1]

  def to_json(self) -> dict:
    """pairs.json's row: the pair and every score computed for it."""
    scores = {
      f.name: getattr(self, f.name)
      for f in dataclasses.fields(self)
      if f.name not in ('pair', 'converted_scales', 'reconstruction_scales', 'converted_wave')
    }
    return dict(dataclasses.asdict(self.pair), **{k: v for k, v in scores.items() if v is not None})


def choose_pairs(
  files: Sequence[str],
  num_pairs: int,
  seed: int,
  said: dict[str, str] | None = None,
  target: str = '',
) -> list[Pair]:
  """A seeded list of conversions: source utterance, target speaker (`target` when given, with
  sources from the other speakers), a reference of another sentence, and the target's recording of
  the source sentence where it exists (`said`: each file's sentence, by default its utterance
  name)."""
  said = said or {f: utterance_name(f) for f in files}
  by_speaker: dict[str, dict[str, str]] = {}
  for f in files:
    by_speaker.setdefault(corpus.speaker_of(f), {}).setdefault(said[f], f)
  speakers = sorted(by_speaker)
  if len(speakers) < 2:
    raise CorpusError('evaluation needs at least two test speakers to convert between')
  if target and target not in by_speaker:
    raise CorpusError(f'--eval_target {target}: not a test speaker; they are {", ".join(speakers)}')
  rng = random.Random(seed)
  pairs = []
  for _ in range(num_pairs):
    if target:
      source_speaker, target_speaker = rng.choice([s for s in speakers if s != target]), target
    else:
      source_speaker, target_speaker = rng.sample(speakers, 2)
    sentence = rng.choice(sorted(by_speaker[source_speaker]))
    others = sorted(u for u in by_speaker[target_speaker] if u != sentence)
    if not others:
      continue
    pairs.append(
      Pair(
        source=by_speaker[source_speaker][sentence],
        target_speaker=target_speaker,
        reference=by_speaker[target_speaker][rng.choice(others)],
        parallel=by_speaker[target_speaker].get(sentence),
      )
    )
  return pairs


def capped(files: Sequence[str], per_speaker: int, seed: int) -> list[str]:
  """At most `per_speaker` files of each speaker, a seeded choice, in file order."""
  by_speaker: dict[str, list[str]] = {}
  for f in files:
    by_speaker.setdefault(corpus.speaker_of(f), []).append(f)
  rng = random.Random(seed)
  chosen = {
    f
    for group in by_speaker.values()
    for f in (group if len(group) <= per_speaker else rng.sample(group, per_speaker))
  }
  return [f for f in files if f in chosen]
