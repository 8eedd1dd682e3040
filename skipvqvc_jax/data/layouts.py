"""How speech corpora lay out their speakers, utterances and transcripts.

| layout | recognised by | speaker | transcript |
| --- | --- | --- | --- |
| `vctk-0.80` | a `wav48/` folder | `wav48/<speaker>/` | `txt/<speaker>/<utterance>.txt` |
| `vctk-0.92` | a `wav48_silence_trimmed/` folder | `wav48_silence_trimmed/<speaker>/`; one microphone's files (`_mic1`, default, or `_mic2`) | `txt/<speaker>/<utterance>.txt` |
| `libritts` | `*.normalized.txt` beside the audio | the top folder of `<speaker>/<chapter>/<utterance>` | `<utterance>.normalized.txt` (else `.original.txt`) |
| `librispeech` | `*.trans.txt` in chapter folders | the top folder of `<speaker>/<chapter>/<utterance>` | the chapter's `<speaker>-<chapter>.trans.txt` |
| `flat` | anything else | the top folder (`<speaker>/<utterance>`, or deeper files under it) | none |

Subset folders of LibriTTS and LibriSpeech (`train-clean-100/`, `dev-other/`, ...) are looked through,
so a corpus root and a subset folder both work. `speaker_depth=N` names the speaker by the N-th folder
below the root instead (1: the top folder), for any other nesting.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re

VCTK_092, VCTK_080 = 'wav48_silence_trimmed', 'wav48'
SUBSET = re.compile(r'^(train|dev|test)-(clean|other)(-\d+)?$')
MIC = re.compile(r'^(.*)_(mic[12])$')


@dataclasses.dataclass(frozen=True)
class Layout:
  name: str  # vctk-0.80 | vctk-0.92 | libritts | librispeech | flat
  input_dir: str  # what the user gave
  root: str  # the folder below which speaker folders (or subset folders) are
  speaker_depth: int = 1  # the folder below root (after subset folders) that names the speaker
  mic: str | None = None  # vctk-0.92: the microphone read

  def to_dict(self) -> dict:
    return dict(name=self.name, speaker_depth=self.speaker_depth, mic=self.mic)


TRANSCRIPT_SUFFIXES = {'.normalized.txt': 'libritts', '.trans.txt': 'librispeech'}


def _transcript_kind(root: str, depth: int = 4) -> str | None:
  """The layout whose transcript files appear first within `depth` folders of root, if any."""
  base = root.count(os.sep)
  for folder, dirs, files in os.walk(root):
    for name in files:
      for suffix, kind in TRANSCRIPT_SUFFIXES.items():
        if name.endswith(suffix):
          return kind
    if folder.count(os.sep) - base >= depth:
      dirs.clear()
  return None


def vctk_root(input_dir: str) -> tuple[str, str] | None:
  """(layout name, audio folder) of a VCTK root; None for any other corpus. Only a folder test, so
  readers of a manifest can find the audio again without walking the corpus."""
  for folder, name in ((VCTK_092, 'vctk-0.92'), (VCTK_080, 'vctk-0.80')):
    if os.path.isdir(os.path.join(input_dir, folder)):
      return name, os.path.join(input_dir, folder)
  return None


def detect(input_dir: str, speaker_depth: int | None = None, mic: str = 'mic1') -> Layout:
  """The layout of a corpus root (see the module's table)."""
  depth = speaker_depth or 1
  vctk = vctk_root(input_dir)
  if vctk:
    return Layout(vctk[0], input_dir, vctk[1], depth, mic if vctk[0] == 'vctk-0.92' else None)
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
  path = os.path.join(layout.root, rel)
  stem = os.path.splitext(os.path.basename(rel))[0]
  candidates = []
  if layout.name.startswith('vctk'):
    plain = MIC.match(stem).group(1) if MIC.match(stem) else stem
    folder = os.path.basename(os.path.dirname(rel))
    candidates = [os.path.join(layout.input_dir, 'txt', folder, plain + '.txt')]
  elif layout.name == 'libritts':
    candidates = [os.path.splitext(path)[0] + ext for ext in ('.normalized.txt', '.original.txt')]
  elif layout.name == 'librispeech':
    return _chapter_transcripts(os.path.dirname(path)).get(stem)
  for candidate in candidates:
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
