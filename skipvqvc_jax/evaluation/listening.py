"""What a listener would hear in the evaluation's conversions: intelligibility through a speech
recogniser, and how the conversion's F0 follows the source's (both with the eval extra)."""

from __future__ import annotations

import numpy as np
from absl import logging

from skipvqvc_jax.core.progress import Progress
from skipvqvc_jax.data import corpus, feature_files
from skipvqvc_jax.evaluation import asr
from skipvqvc_jax.evaluation.metrics import error_rates, f0_agreement, f0_contour, world_available
from skipvqvc_jax.evaluation.pairs import PairResult

KINDS = ('converted', 'reconstructed', 'unconverted')  # what `listen` hears of each pair
F0_KINDS = ('converted', 'reconstructed', 'real_vs_vocoded')  # against the vocoded source's F0


def listen(converter, results: list[PairResult], said: dict[str, str]) -> dict:
  """With the eval extra: what a listener would hear in each pair, through the converter's vocoder.

  - intelligibility (pocketsphinx, where the corpus has transcripts): word and character error rates
    of the conversion, of the reconstruction (the source into its own voice: what the autoencoder
    keeps) and of the unconverted source (the ceiling: the vocoder and the recogniser alone);
  - F0 (pyworld): how the log-F0 of the conversion and of the reconstruction follow the source's
    (correlation; RMSE in cents, which a conversion into another voice raises by the shift of the
    speakers' registers). The source is vocoded too, so that like is compared with like: F0 trackers
    err on vocoded speech (Griffin-Lim's phase), and `real_vs_vocoded` (the real recording against
    its resynthesis) says how much.
  Each figure per pair (pairs.json) and averaged (metrics.json)."""
  recognise = asr.Recogniser() if asr.missing() is None and said else None
  f0_ok = world_available()
  out = dict(
    intelligibility=dict(
      available=False,
      why=asr.missing() or 'the corpus has no transcripts (VCTK, LibriTTS and LibriSpeech do)',
    ),
    f0=dict(available=False, why='pip install -e ".[eval]" (pyworld, pysptk)'),
  )
  if recognise is None and not f0_ok:
    return out
  real = corpus.source_waveforms(sorted({r.pair.source for r in results}), converter.params)
  progress = Progress('eval: listening (recognition, F0)', len(results), logging.info, unit='pairs')
  for result in results:
    progress.update()
    _hear(result, converter, recognise, said.get(result.pair.source), f0_ok, real)
  return out | _means(results)


def _hear(result: PairResult, converter, recognise, text: str | None, f0_ok: bool, real) -> None:
  """One pair's figures into `result`: the words heard in its conversion, reconstruction and
  unconverted source (with `text`, what was said), and how their F0 follows the source's."""
  sr = converter.vocoder.sample_rate
  source = feature_files.load_features(result.pair.source)
  waves = dict(
    converted=result.converted_audio(converter.vocoder),
    reconstructed=converter.vocoder(
      converter.reconstruct_mel(source, converter.source_f0(result.pair.source))[0]
    ),
    unconverted=converter.vocoder(source),
  )
  if recognise is not None and text:
    result.heard = {kind: recognise(wave, sr) for kind, wave in waves.items()}
    rates = {kind: error_rates(text, heard) for kind, heard in result.heard.items()}
    result.wer = {kind: wer for kind, (wer, _) in rates.items()}
    result.cer = {kind: cer for kind, (_, cer) in rates.items()}
  if f0_ok:
    source_f0 = f0_contour(waves['unconverted'], sr)
    result.f0 = {
      kind: f0_agreement(source_f0, f0_contour(waves[kind], sr)) for kind in F0_KINDS[:2]
    }
    if real.get(result.pair.source) is not None:
      result.f0['real_vs_vocoded'] = f0_agreement(
        f0_contour(real[result.pair.source], sr), source_f0
      )


def _mean(values):
  values = [v for v in values if v is not None]
  return float(np.mean(values)) if values else None


def _means(results: list[PairResult]) -> dict:
  """The pairs' figures averaged, for those of them that have each kind."""
  out = {}
  heard = [r for r in results if r.wer]
  if heard:
    out['intelligibility'] = dict(
      available=True,
      recogniser='pocketsphinx en-us (its own model)',
      pairs=len(heard),
      wer={kind: _mean(r.wer[kind] for r in heard) for kind in KINDS},
      cer={kind: _mean(r.cer[kind] for r in heard) for kind in KINDS},
    )
  pitched = [r for r in results if r.f0]
  if pitched:
    out['f0'] = dict(
      available=True,
      pairs=len(pitched),
      **{
        kind: {
          key: _mean(r.f0[kind][key] for r in pitched if kind in r.f0)
          for key in ('f0_corr', 'f0_rmse_cents')
        }
        for kind in F0_KINDS
      },
    )
  return out
