"""`main.py --mode=eval`: measure a checkpoint on the unseen-speaker test set and write a report.

Writes {workdir}/eval/metrics.json, pairs.json, report.html (with its images and audio in assets/), and
TensorBoard scalars under eval/. Metrics:
- reconstruction L1 of whole test utterances in raw log-mel units;
- per-scale codebook usage, perplexity and dead codes over every test frame;
- one-shot conversion over a fixed, seeded list of (source utterance, target speaker) pairs: the target
  is given by one reference utterance of another sentence, and where the corpus is parallel (the target
  speaker also read the source's sentence) the mel-cepstral distortion with DTW against that recording,
  next to the no-conversion baseline (the source against the same recording);
- speaker similarity with resemblyzer's pretrained speaker encoder, when it is installed (".[eval]");
- the vocoders: Griffin-Lim and, with --vocoder=DIR, the neural vocoder resynthesise real test
  utterances from their mels; MCD-DTW of the resynthesis' features against the originals (and speaker
  similarity to the real recording, with ".[eval]") says what each vocoder costs before any conversion.
"""
from __future__ import annotations

import html
import math
import os
import random
from typing import Sequence

import numpy as np
from absl import logging

from skipvqvc_jax import audio, checkpoints, convert, corpus, input_pipeline, summaries, vocoders
from skipvqvc_jax.errors import CorpusError
from skipvqvc_jax.fileio import save_json, save_text
from skipvqvc_jax.progress import Progress

MCD_COEFFS = 24  # mel-cepstral coefficients c1..c24 (c0, the energy, is left out as usual)


# ---- metrics --------------------------------------------------------------------------------------

def mel_cepstrum(log10_mel: np.ndarray, coeffs: int = MCD_COEFFS) -> np.ndarray:
  """(frames, coeffs) mel-cepstra c1..c_coeffs of a log10 mel-amplitude spectrogram.

  c_d = (2 / N) sum_k ln S_k cos(pi d (k + 1/2) / N) over the N mel bands: the cosine series with
  ln S(w) ~ c_0 + 2 sum_d c_d cos(d w) on the mel-warped axis, the scale of SPTK mel-cepstra that the
  MCD formula assumes (an orthonormal DCT would inflate it by sqrt(N / 2)).
  """
  import scipy.fft  # pylint: disable=import-outside-toplevel
  log_mel = np.log(10.0) * np.asarray(log10_mel, np.float64)
  cep = scipy.fft.dct(log_mel, type=2, norm=None, axis=0) / log_mel.shape[0]  # (2/N) sum cos
  return cep[1:coeffs + 1].T


def mcd_dtw(log10_mel: np.ndarray, reference: np.ndarray) -> float:
  """Mel-cepstral distortion in dB between two log-mels, averaged over their DTW alignment."""
  import librosa  # pylint: disable=import-outside-toplevel
  a, b = mel_cepstrum(log10_mel), mel_cepstrum(reference)
  cost = np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))
  _, path = librosa.sequence.dtw(C=cost)
  diff = a[path[:, 0]] - b[path[:, 1]]
  return float(np.mean(10.0 / np.log(10.0) * np.sqrt(2.0 * (diff**2).sum(-1))))


def codebook_metrics(codes_per_scale: Sequence[np.ndarray], sizes: Sequence[int]) -> dict:
  out = {}
  for s, (codes, k) in enumerate(zip(codes_per_scale, sizes)):
    counts = np.bincount(np.concatenate([c.ravel() for c in codes]), minlength=k)
    p = counts / counts.sum()
    nz = p[p > 0]
    out[f'codebook_s{s}'] = dict(size=int(k), used=int((counts > 0).sum()),
                                 usage=float((counts > 0).mean()),
                                 perplexity=float(np.exp(-(nz * np.log(nz)).sum())),
                                 dead_codes=int((counts == 0).sum()))
  return out


def speaker_similarity_encoder():
  """resemblyzer's VoiceEncoder when the eval extra is installed, else None."""
  try:
    from resemblyzer import VoiceEncoder  # pylint: disable=import-outside-toplevel
  except ImportError:
    return None
  return VoiceEncoder(device='cpu', verbose=False)


# ---- pairs ----------------------------------------------------------------------------------------

def utterance_name(feature_file: str) -> str:
  """The sentence part of `{speaker}_{utterance}.npy` (VCTK and the demo corpus share these)."""
  return os.path.splitext(os.path.basename(feature_file))[0].split('_', 1)[1]


def choose_pairs(files: Sequence[str], num_pairs: int, seed: int) -> list[dict]:
  """A seeded list of conversions: source utterance, target speaker, a reference of another sentence,
  and the target's recording of the source sentence where it exists (parallel corpora)."""
  by_speaker: dict[str, dict[str, str]] = {}
  for f in files:
    by_speaker.setdefault(corpus.speaker_of(f), {})[utterance_name(f)] = f
  speakers = sorted(by_speaker)
  if len(speakers) < 2:
    raise CorpusError('evaluation needs at least two test speakers to convert between')
  rng = random.Random(seed)
  pairs = []
  for _ in range(num_pairs):
    source_speaker, target_speaker = rng.sample(speakers, 2)
    sentence = rng.choice(sorted(by_speaker[source_speaker]))
    others = sorted(u for u in by_speaker[target_speaker] if u != sentence)
    if not others:
      continue
    pairs.append(dict(source=by_speaker[source_speaker][sentence],
                      target_speaker=target_speaker,
                      reference=by_speaker[target_speaker][rng.choice(others)],
                      parallel=by_speaker[target_speaker].get(sentence)))
  return pairs


# ---- the run --------------------------------------------------------------------------------------

def run(workdir: str, step: int | None = None, vocoder: str = 'griffin_lim', num_pairs: int = 20,
        report_pairs: int = 6, num_vocoder_utterances: int = 8) -> dict:
  """Evaluates the checkpoint (default: latest) of `workdir`, as its own config.json describes it;
  returns the metrics it writes."""
  converter = convert.Converter.restore(workdir, step, vocoder)
  cfg = converter.config
  step = checkpoints.latest_step(workdir) if step is None else step
  if not os.path.isdir(cfg.data.test_dir):
    raise CorpusError(f'{cfg.data.test_dir}, the test features {workdir}/config.json names, is gone: '
                      f'preprocess the test speakers there again, or point data.test_dir in '
                      f'config.json at their features')
  files = input_pipeline.list_features(cfg.data.test_dir)
  out_dir = os.path.join(workdir, 'eval')
  assets = os.path.join(out_dir, 'assets')
  os.makedirs(assets, exist_ok=True)

  # Reconstruction and codebooks over whole utterances.
  l1, frames, codes = 0.0, 0, [[] for _ in range(converter.model.num_scales)]
  progress = Progress('eval: reconstructing the test utterances', len(files), logging.info)
  for f in files:
    progress.update()
    mel = input_pipeline.load_features(f)
    recon, enc = converter.reconstruct(mel)
    l1 += float(np.abs(recon - mel).sum())
    frames += mel.size
    for s, c in enumerate(enc.codes):
      # Only codes of real frames count, not of the padding.
      codes[s].append(np.asarray(c[0])[:math.ceil(mel.shape[1] / 2 ** (s + 1))])
  metrics: dict = dict(step=step, test_utterances=len(files), recon_l1_logmel=l1 / frames)
  metrics.update(codebook_metrics(codes, [q.num_codes for q in converter.model.quantize]))

  # Conversions.
  pairs = choose_pairs(files, num_pairs, cfg.seed)
  mcd, baseline = [], []
  progress = Progress('eval: converting', len(pairs), logging.info, unit='pairs')
  for pair in pairs:
    progress.update()
    source, reference = input_pipeline.load_features(pair['source']), input_pipeline.load_features(pair['reference'])
    pair['converted_mel'] = converter.convert_mel(source, converter.speaker([reference]))
    if pair['parallel']:
      truth = input_pipeline.load_features(pair['parallel'])
      pair['mcd_db'] = mcd_dtw(pair['converted_mel'], truth)
      pair['baseline_mcd_db'] = mcd_dtw(source, truth)
      mcd.append(pair['mcd_db'])
      baseline.append(pair['baseline_mcd_db'])
  metrics['conversion'] = dict(
      pairs=len(pairs), parallel_pairs=len(mcd),
      mcd_dtw_db=float(np.mean(mcd)) if mcd else None,
      baseline_mcd_dtw_db=float(np.mean(baseline)) if baseline else None)
  encoder = speaker_similarity_encoder()
  metrics['speaker_similarity'] = (speaker_similarity(encoder, converter, files, pairs)
                                   if encoder is not None else dict(
      available=False, why='resemblyzer is not installed: pip install -e ".[eval]"'))

  metrics['vocoders'], resynthesis = compare_vocoders(converter, files, num_vocoder_utterances,
                                                      cfg.seed, encoder)

  _write_report(out_dir, assets, metrics, pairs[:report_pairs], converter,
                resynthesis if report_pairs else {})
  save_json(os.path.join(out_dir, 'pairs.json'), [
      {k: v for k, v in p.items() if k != 'converted_mel'} for p in pairs])
  save_json(os.path.join(out_dir, 'metrics.json'), metrics)
  writer = summaries.Writer(workdir)
  writer.scalars(step, _flat(metrics), 'eval/')
  writer.close()
  logging.info('wrote %s', os.path.join(out_dir, 'report.html'))
  return metrics


def equal_error_threshold(same: Sequence[float], different: Sequence[float]) -> tuple[float, float]:
  """(threshold, equal error rate): where rejecting same-speaker and accepting other-speaker scores
  are equally likely."""
  same, different = np.asarray(same), np.asarray(different)
  candidates = np.unique(np.concatenate([same, different]))
  false_reject = np.array([(same < t).mean() for t in candidates])
  false_accept = np.array([(different >= t).mean() for t in candidates])
  i = int(np.argmin(np.abs(false_reject - false_accept)))
  return float(candidates[i]), float((false_reject[i] + false_accept[i]) / 2)


def speaker_similarity(encoder, converter, files: Sequence[str], pairs: list[dict]) -> dict:
  """Cosine similarities of conversions to their target reference and to their source, and the share
  accepted as the target at the EER threshold of real test utterances.

  Every waveform, real or converted, goes through the same vocoder first, so the speaker encoder
  compares like with like and the threshold is not set by vocoder artefacts.
  """
  from resemblyzer import preprocess_wav  # pylint: disable=import-outside-toplevel
  sr = converter.vocoder.sample_rate
  embed = lambda mel: encoder.embed_utterance(preprocess_wav(converter.vocoder(mel), source_sr=sr))
  progress = Progress('eval: speaker embeddings of the test utterances', len(files), logging.info)
  real = {}
  for f in files:
    progress.update()
    real[f] = embed(input_pipeline.load_features(f))
  names = sorted(real)
  same, different = [], []
  for i, a in enumerate(names):
    for b in names[i + 1:]:
      score = float(real[a] @ real[b])
      (same if corpus.speaker_of(a) == corpus.speaker_of(b) else different).append(score)
  threshold, eer = equal_error_threshold(same, different)
  to_target, to_source = [], []
  for pair in pairs:
    converted = embed(pair['converted_mel'])
    pair['similarity_to_target'] = float(converted @ real[pair['reference']])
    pair['similarity_to_source'] = float(converted @ real[pair['source']])
    to_target.append(pair['similarity_to_target'])
    to_source.append(pair['similarity_to_source'])
  return dict(available=True, encoder='resemblyzer VoiceEncoder',
              to_target=float(np.mean(to_target)), to_source=float(np.mean(to_source)),
              real_same_speaker=float(np.mean(same)), real_other_speaker=float(np.mean(different)),
              eer_threshold=threshold, real_eer=eer,
              accepted_as_target=float(np.mean(np.asarray(to_target) >= threshold)))


def compare_vocoders(converter, files: Sequence[str], num_utterances: int, seed: int,
                     encoder) -> tuple[dict, dict]:
  """Griffin-Lim and the converter's vocoder (when neural) on resynthesis of real test utterances.

  Returns (metrics per vocoder, {vocoder: waveform} of the first utterance for the report)."""
  params = converter.params
  neural = converter.vocoder.name != 'griffin_lim'
  candidates = {'griffin_lim': vocoders.get('griffin_lim', params) if neural else converter.vocoder}
  if neural:
    candidates[converter.vocoder.name] = converter.vocoder
  chosen = sorted(random.Random(seed).sample(list(files), min(num_utterances, len(files))))
  if not chosen:
    return dict(utterances=0), {}
  mels = {f: input_pipeline.load_features(f) for f in chosen}
  real = corpus.source_waveforms(chosen, params)
  real_embeddings = {}
  if encoder is not None:
    from resemblyzer import preprocess_wav  # pylint: disable=import-outside-toplevel
    embed = lambda wave: encoder.embed_utterance(preprocess_wav(wave, source_sr=params.sample_rate))
    real_embeddings = {f: embed(wave) for f, wave in real.items() if wave is not None}
  metrics: dict = dict(utterances=len(chosen))
  first = dict(utterance=os.path.basename(chosen[0]), real=real[chosen[0]])
  for name, vocoder in candidates.items():
    logging.info('eval: resynthesising %d test utterances with %s', len(mels), name)
    mcd, similarity = [], []
    for f, mel in mels.items():
      wave = vocoder(mel)
      mcd.append(mcd_dtw(audio.log_mel(wave, params), mel))
      if f in real_embeddings:
        similarity.append(float(embed(wave) @ real_embeddings[f]))
      if f == chosen[0]:
        first[name] = wave
    metrics[name] = dict(resynthesis_mcd_dtw_db=float(np.mean(mcd)))
    if similarity:
      metrics[name]['similarity_to_real'] = float(np.mean(similarity))
  return metrics, first


def _flat(metrics: dict, prefix: str = '') -> dict:
  out = {}
  for k, v in metrics.items():
    if isinstance(v, dict):
      out.update(_flat(v, f'{prefix}{k}/'))
    elif isinstance(v, (int, float)) and not isinstance(v, bool) and v is not None:
      out[prefix + k] = v
  return out


def _vocoder_section(assets: str, metrics: dict, resynthesis: dict, sample_rate: int) -> str:
  """The vocoders' resynthesis scores, and one real utterance through each of them."""
  rows = ''.join(
      f'<tr><td>{html.escape(name)}</td><td>{m["resynthesis_mcd_dtw_db"]:.2f}</td>'
      f'<td>{m["similarity_to_real"]:.3f}</td></tr>' if 'similarity_to_real' in m else
      f'<tr><td>{html.escape(name)}</td><td>{m["resynthesis_mcd_dtw_db"]:.2f}</td><td>-</td></tr>'
      for name, m in metrics.items() if isinstance(m, dict))
  players = []
  for name, wave in resynthesis.items():
    if name == 'utterance' or wave is None:
      continue
    convert.write_wav(os.path.join(assets, f'vocoder_{name}.wav'), wave, sample_rate)
    players.append(f'<figure><figcaption>{html.escape(name)}</figcaption><audio controls '
                   f'src="assets/vocoder_{name}.wav"></audio></figure>')
  utterance = html.escape(resynthesis.get('utterance', ''))
  return (f'<h2>Vocoders</h2><p>Real test utterances resynthesised from their mels ({metrics["utterances"]}'
          f' utterances): MCD-DTW of the resynthesis against the original features, and speaker '
          f'similarity to the real recording (with the eval extra).</p><table><tr><th>vocoder</th>'
          f'<th>MCD-DTW (dB)</th><th>similarity</th></tr>{rows}</table>'
          + (f'<p>{utterance}:</p>{"".join(players)}' if players else ''))


def _write_report(out_dir, assets, metrics, pairs, converter, resynthesis: dict) -> None:
  """A static page: metrics table, the vocoders, and per pair the mels as images and the audio as
  players."""
  rows = ''.join(f'<tr><td>{html.escape(k)}</td><td>{v:.4g}</td></tr>' if isinstance(v, float)
                 else f'<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>'
                 for k, v in _flat(metrics).items())
  sections = []
  for i, pair in enumerate(pairs):
    mels = dict(source=input_pipeline.load_features(pair['source']), target_reference=input_pipeline.load_features(pair['reference']),
                reconstruction=converter.reconstruct(input_pipeline.load_features(pair['source']))[0],
                conversion=pair['converted_mel'])
    if pair['parallel']:
      mels['target_same_sentence'] = input_pipeline.load_features(pair['parallel'])
    cells = []
    for name, mel in mels.items():
      stem = f'pair{i:02d}_{name}'
      _save_png(os.path.join(assets, stem + '.png'), summaries.mel_image(mel, name))
      convert.write_wav(os.path.join(assets, stem + '.wav'), converter.vocoder(mel),
                        converter.vocoder.sample_rate)
      cells.append(f'<figure><figcaption>{name}</figcaption><img src="assets/{stem}.png" '
                   f'alt="{name} mel"><audio controls src="assets/{stem}.wav"></audio></figure>')
    scores = (f'MCD-DTW {pair["mcd_db"]:.2f} dB (no conversion: {pair["baseline_mcd_db"]:.2f} dB)'
              if pair.get('mcd_db') is not None else 'no parallel recording')
    sections.append(f'<section><h3>{i + 1}. {html.escape(os.path.basename(pair["source"]))} &rarr; '
                    f'{html.escape(pair["target_speaker"])}</h3><p>{scores}</p>{"".join(cells)}'
                    f'</section>')
  page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>skipvqvc_jax evaluation, step {metrics['step']}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:auto}} figure{{display:inline-block;
margin:4px}} img{{width:340px;display:block}} audio{{width:340px}} td{{padding:2px 10px}}</style>
</head><body><h1>Evaluation at step {metrics['step']}</h1>
<p>Unseen test speakers; one reference utterance of another sentence per conversion.
MCD-DTW compares each conversion with the target speaker's own recording of the same sentence; the
baseline compares the unconverted source with it.</p>
<table>{rows}</table>
{_vocoder_section(assets, metrics['vocoders'], resynthesis, converter.vocoder.sample_rate)}
<h2>Conversions</h2>{''.join(sections)}</body></html>
"""
  save_text(os.path.join(out_dir, 'report.html'), page)


def _save_png(path: str, image: np.ndarray) -> None:
  from matplotlib import pyplot as plt  # pylint: disable=import-outside-toplevel
  plt.imsave(path, image)
