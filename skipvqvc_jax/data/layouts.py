"""How speech corpora lay out their speakers, utterances and transcripts.

| layout | recognised by | speaker | transcript |
| --- | --- | --- | --- |
| `vctk-0.80` | a `wav48/` folder | `wav48/<speaker>/` | `txt/<speaker>/<utterance>.txt` |
| `vctk-0.92` | a `wav48_silence_trimmed/` folder | `wav48_silence_trimmed/<speaker>/`; one microphone's files (`_mic1`, default, or `_mic2`) | `txt/<speaker>/<utterance>.txt` |
| `libritts` | `*.normalized.txt` beside the audio | the top folder of `<speaker>/<chapter>/<utterance>` | `<utterance>.normalized.txt` (else `.original.txt`) |
| `librispeech` | `*.trans.txt` in chapter folders | the top folder of `<speaker>/<chapter>/<utterance>` | the chapter's `<speaker>-<chapter>.trans.txt` |
| `flat` | anything else | the top folder (`<speaker>/<utterance>`, or deeper files under it) | none |

Subset folders of LibriTTS and LibriSpeech (`train-clean-100/`, `dev-other/`, ...) are looked through,
so a corpus root and a subset folder both work. `Options(speaker_depth=N)` names the speaker by the N-th
folder below the root instead (1, the default, is the top folder), for any other nesting.

Each layout is a row of `KINDS` (how it is recognised, where its transcripts are): a new corpus
layout is one row and its transcript rule.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
from collections.abc import Callable

VCTK_092, VCTK_080 = 'wav48_silence_trimmed', 'wav48'
SUBSET = re.compile(r'^(train|dev|test)-(clean|other)(-\d+)?$')
MIC = re.compile(r'^(.*)_(mic[12])$')


@dataclasses.dataclass(frozen=True)
class Options:
  """What the user says about a corpus' layout, passed once from the flags or the config."""

  speaker_depth: int = 1  # the folder below the root (after subset folders) naming the speaker
  mic: str = 'mic1'  # vctk-0.92: the microphone whose files are read


@dataclasses.dataclass(frozen=True)
class Layout:
  name: str  # a row of KINDS
  input_dir: str  # what the user gave
  root: str  # the folder below which speaker folders (or subset folders) are
  speaker_depth: int = 1  # the folder below root (after subset folders) that names the speaker
  mic: str | None = None  # vctk-0.92: the microphone read

  def to_dict(self) -> dict:
    return dict(name=self.name, speaker_depth=self.speaker_depth, mic=self.mic)


def _vctk_transcript(rel: str, layout: Layout) -> list[str]:
  stem = os.path.splitext(os.path.basename(rel))[0]
  plain = MIC.match(stem).group(1) if MIC.match(stem) else stem
  folder = os.path.basename(os.path.dirname(rel))
  return [os.path.join(layout.input_dir, 'txt', folder, plain + '.txt')]


def _libritts_transcript(rel: str, layout: Layout) -> list[str]:
  path = os.path.splitext(os.path.join(layout.root, rel))[0]
  return [path + ext for ext in ('.normalized.txt', '.original.txt')]


def _librispeech_transcript(rel: str, layout: Layout) -> str | None:
  path = os.path.join(layout.root, rel)
  stem = os.path.splitext(os.path.basename(rel))[0]
  return _chapter_transcripts(os.path.dirname(path)).get(stem)


@dataclasses.dataclass(frozen=True)
class Kind:
  """A layout: recognised by an audio folder in the root (`audio_folder`) or by transcript files
  (`transcript_suffix`) near the audio; `transcript(rel, layout)` gives the files that may hold an
  utterance's text (the first that exists is read), or its text itself."""

  name: str
  audio_folder: str | None = None
  transcript_suffix: str | None = None
  transcript: Callable[[str, Layout], list[str] | str | None] = lambda rel, layout: None
  has_mics: bool = False


KINDS = (
  Kind('vctk-0.92', audio_folder=VCTK_092, transcript=_vctk_transcript, has_mics=True),
  Kind('vctk-0.80', audio_folder=VCTK_080, transcript=_vctk_transcript),
  Kind('libritts', transcript_suffix='.normalized.txt', transcript=_libritts_transcript),
  Kind('librispeech', transcript_suffix='.trans.txt', transcript=_librispeech_transcript),
  Kind('flat'),  # anything else
)
KIND = {kind.name: kind for kind in KINDS}


def _transcript_kind(root: str, depth: int = 4) -> str | None:
  """The layout whose transcript files appear first within `depth` folders of root, if any."""
  base = root.count(os.sep)
  suffixes = [(k.transcript_suffix, k.name) for k in KINDS if k.transcript_suffix]
  for folder, dirs, files in os.walk(root):
    for name in files:
      for suffix, kind in suffixes:
        if name.endswith(suffix):
          return kind
    if folder.count(os.sep) - base >= depth:
      dirs.clear()
  return None


def vctk_root(input_dir: str) -> tuple[str, str] | None:
  """(layout name, audio folder) of a corpus recognised by its audio folder (VCTK); None for any
  other corpus. Only a folder test, so readers of a manifest can find the audio again without
  walking the corpus."""
  for kind in KINDS:
    if kind.audio_folder and os.path.isdir(os.path.join(input_dir, kind.audio_folder)):
      return kind.name, os.path.join(input_dir, kind.audio_folder)
  return None


def detect(input_dir: str, options: Options = Options()) -> Layout:
  """The layout of a corpus root (see the module's table)."""
  depth = options.speaker_depth or 1
  found = vctk_root(input_dir)
  if found:
    mic = options.mic if KIND[found[0]].has_mics else None
    return Layout(found[0], input_dir, found[1], depth, mic)
  return Layout(_transcript_kind(input_dir) or 'flat', input_dir, input_dir, depth)


def speaker_folder(rel: str, layout: Layout) -> str | None:
  """The folder of a file (path relative to the root) that names its speaker; None when the file
  is not deep enough to be inside one."""
  folders = rel.split(os.sep)[:-1]
  while folders and SUBSET.match(folders[0]):
    folders = folders[1:]
  return folders[layout.speaker_depth - 1] if len(folders) >= layout.speaker_depth else None


def utterance(stem: str, speaker: str, layout: Layout) -> str | None:
  """The utterance name of a file stem (the speaker prefix and a VCTK microphone suffix taken off);
  None for a VCTK 0.92 file of the other microphone."""
  if layout.mic:
    match = MIC.match(stem)
    if match:
      if match.group(2) != layout.mic:
        return None
      stem = match.group(1)
  return stem[len(speaker) + 1 :] if stem.startswith(speaker + '_') else stem


def transcript(rel: str, layout: Layout) -> str | None:
  """The text of one utterance, where the corpus has it."""
  found = KIND[layout.name].transcript(rel, layout)
  if not isinstance(found, list):
    return found
  for candidate in found:
    if os.path.isfile(candidate):
      with open(candidate, errors='replace') as f:
        return ' '.join(f.read().split())
  return None


@functools.lru_cache(maxsize=4)
def _chapter_transcripts(folder: str) -> dict[str, str]:
  """{utterance: text} of a LibriSpeech chapter's `.trans.txt`, read once for all its utterances
  (the corpus is walked in order, so a chapter's files come together)."""
  texts = {}
  for name in os.listdir(folder):
    if name.endswith('.trans.txt'):
      with open(os.path.join(folder, name), errors='replace') as f:
        for line in f:
          key, _, text = line.strip().partition(' ')
          texts[key] = text.strip()
  return texts


def normalise(text: str) -> str:
  """A transcript as compared between speakers: lower case, letters, digits and single spaces."""
  return ' '.join(re.sub(r"[^\w\s']", ' ', text.lower()).split())
