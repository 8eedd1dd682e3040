"""Which voices a recogniser understands through the vocoder: the ceiling of each voice of a corpus.

    python benchmarks/voice_ceilings.py --corpus=/work/corpora/tuning [--per_voice=12] [--out=F]

For each speaker of an audio corpus with transcripts (any layout preprocessing reads), a seeded choice
of `per_voice` utterances goes through what the evaluation's "unconverted" figure hears: our log-mel,
the vocoder (Griffin-Lim by default), pocketsphinx; the word error rate against the transcript is that
voice's ceiling, the best any conversion into or out of it can show with that recogniser. A study's
held-out voices should be ones whose ceiling is low (benchmarks/README.md, "The budget study"), or it
cannot tell a good recipe from a bad one. Needs the `.[listen]` extra (pocketsphinx).
"""

import argparse
import os
import random

import numpy as np
from common import write_rows

from skipvqvc_jax import vocoders
from skipvqvc_jax.data import audio, corpus, layouts
from skipvqvc_jax.evaluation import asr
from skipvqvc_jax.evaluation.metrics import error_rates


def utterances_by_speaker(root: str) -> dict[str, list[tuple[str, str]]]:
  """{speaker: [(audio path, transcript)]} of every utterance that has a transcript."""
  found, _, layout = corpus.find_utterances(root, layouts.Options())
  by_speaker: dict[str, list[tuple[str, str]]] = {}
  for u in found:
    if u.transcript:
      by_speaker.setdefault(u.speaker, []).append(
        (os.path.join(layout.root, u.source), u.transcript)
      )
  return by_speaker


def ceiling(items, vocoder, recognise, params) -> dict:
  """The mean word and character error rates of these (path, text) through vocoder and recogniser."""
  rates = []
  for path, text in items:
    mel, _ = audio.file_to_log_mel(path, params)
    rates.append(error_rates(text, recognise(vocoder(mel), vocoder.sample_rate)))
  wer, cer = np.mean(rates, axis=0)
  return dict(wer=float(wer), cer=float(cer), utterances=len(items))


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--corpus', required=True, help='an audio corpus with transcripts')
  parser.add_argument('--per_voice', type=int, default=12)
  parser.add_argument('--vocoder', default='griffin_lim')
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--out', default='', help='also write the rows as JSON here')
  args = parser.parse_args()
  if asr.missing():
    raise SystemExit(f'error: no recogniser: {asr.missing()}')
  params = audio.FeatureParams()
  vocoder, recognise = vocoders.get(args.vocoder, params), asr.Recogniser()
  rows = []
  print('voice                WER    CER   (utterances)')
  for speaker, items in sorted(utterances_by_speaker(args.corpus).items()):
    chosen = random.Random(args.seed).sample(items, min(args.per_voice, len(items)))
    rows.append(dict(voice=speaker, **ceiling(sorted(chosen), vocoder, recognise, params)))
    print(
      f'{speaker:18s}  {rows[-1]["wer"]:.2f}   {rows[-1]["cer"]:.2f}   ({len(chosen)})', flush=True
    )
  write_rows(args.out, rows)


if __name__ == '__main__':
  main()
