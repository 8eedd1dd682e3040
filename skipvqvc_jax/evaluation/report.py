"""The evaluation's pages: a report per evaluated checkpoint (metrics, the vocoders, each pair's mels
as images and audio as players) and an index of every evaluation of a run."""

from __future__ import annotations

import html
import os

from skipvqvc_jax.core import fileio, storage
from skipvqvc_jax.core.fileio import save_text
from skipvqvc_jax.data import audio, feature_files
from skipvqvc_jax.evaluation import pictures, world
from skipvqvc_jax.evaluation.metrics import world_available
from skipvqvc_jax.store import summaries


def flat(metrics: dict, prefix: str = '') -> dict:
  out = {}
  for k, v in metrics.items():
    if isinstance(v, dict):
      out.update(flat(v, f'{prefix}{k}/'))
    elif isinstance(v, (int, float)) and not isinstance(v, bool) and v is not None:
      out[prefix + k] = v
  return out


def write_index(eval_dir: str) -> None:
  """eval/index.html: every evaluation of the workdir side by side, with links to their reports."""
  # step_N, or step_N-on-FOLDER-to-SPEAKER for other test features or one target (evaluate.out_name)
  folders = sorted(
    (
      d
      for d in storage.listdir(eval_dir)
      if d.startswith('step_') and storage.isfile(storage.join(eval_dir, d, 'metrics.json'))
    ),
    key=lambda d: (int(d[len('step_') :].split('-')[0]), d),
  )
  rows = []
  for folder in folders:
    m = fileio.load_json(storage.join(eval_dir, folder, 'metrics.json'))
    conversion, similarity = m.get('conversion', {}), m.get('speaker_similarity', {})
    cell = lambda v: '-' if v is None else f'{v:.3f}'
    rows.append(
      f'<tr><td><a href="{folder}/report.html">{folder.replace("_", " ", 1)}</a></td>'
      f'<td>{cell(m.get("recon_l1_logmel"))}</td>'
      f'<td>{cell(conversion.get("lmcd_dtw_db"))}</td>'
      f'<td>{cell(similarity.get("accepted_as_target"))}</td>'
      f'<td>{cell(similarity.get("identified_as_target"))}</td>'
      f'<td>{cell((m.get("intelligibility", {}).get("wer") or {}).get("converted"))}</td></tr>'
    )
  save_text(
    storage.join(eval_dir, 'index.html'),
    f"""<!doctype html>
<html><head><meta charset="utf-8"><title>skipvqvc_jax evaluations</title></head><body>
<h1>Evaluations</h1><table><tr><th>checkpoint</th><th>reconstruction L1 (log-mel)</th>
<th>log-mel cepstral distortion (dB)</th><th>accepted as target</th><th>identified as target</th>
<th>word error rate of conversions</th></tr>{''.join(rows)}</table>
</body></html>
""",
  )


def _vocoder_section(assets: str, metrics: dict, resynthesis: dict, sample_rate: int) -> str:
  """The vocoders' resynthesis scores, and one real utterance through each of them."""
  rows = ''.join(
    f'<tr><td>{html.escape(name)}</td><td>{m["resynthesis_lmcd_dtw_db"]:.2f}</td>'
    f'<td>{m["similarity_to_real"]:.3f}</td></tr>'
    if 'similarity_to_real' in m
    else f'<tr><td>{html.escape(name)}</td><td>{m["resynthesis_lmcd_dtw_db"]:.2f}</td><td>-</td></tr>'
    for name, m in metrics.items()
    if isinstance(m, dict)
  )
  players = []
  for name, wave in resynthesis.items():
    if name == 'utterance' or wave is None:
      continue
    audio.write_audio(storage.join(assets, f'vocoder_{name}.wav'), wave, sample_rate)
    players.append(
      f'<figure><figcaption>{html.escape(name)}</figcaption><audio controls '
      f'src="assets/vocoder_{name}.wav"></audio></figure>'
    )
  utterance = html.escape(resynthesis.get('utterance', ''))
  return (
    f'<h2>Vocoders</h2><p>Real test utterances resynthesised from their mels ({metrics["utterances"]}'
    f' utterances): log-mel cepstral distortion (DTW) of the resynthesis against the original features, and speaker '
    f'similarity to the real recording (with the eval extra).</p><table><tr><th>vocoder</th>'
    f'<th>log-mel CD (dB)</th><th>similarity</th></tr>{rows}</table>'
    + (f'<p>{utterance}:</p>{"".join(players)}' if players else '')
  )


def write_report(out_dir, assets, metrics, results, converter, resynthesis: dict) -> None:
  """A static page: metrics table, the vocoders, and per pair (`evaluate.PairResult`: what the
  evaluation computed) the mels as images and the audio as players."""
  rows = ''.join(
    f'<tr><td>{html.escape(k)}</td><td>{v:.4g}</td></tr>'
    if isinstance(v, float)
    else f'<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>'
    for k, v in flat(metrics).items()
  )
  sections = [_pair_section(i, result, assets, converter) for i, result in enumerate(results)]
  page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>skipvqvc_jax evaluation, step {metrics['step']}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:auto}} figure{{display:inline-block;
margin:4px}} img{{width:340px;display:block}} audio{{width:340px}} td{{padding:2px 10px}}</style>
</head><body><h1>Evaluation at step {metrics['step']}</h1>
<p><a href="../index.html">every evaluation of this run</a></p>
<p>Unseen test speakers; one reference utterance of another sentence per conversion.
The log-mel cepstral distortion (DTW-aligned; not the WORLD/SPTK MCD of papers) compares each
conversion with the target speaker's own recording of the same sentence; the
baseline compares the unconverted source with it.</p>
<table>{rows}</table>
{_vocoder_section(assets, metrics['vocoders'], resynthesis, converter.vocoder.sample_rate)}
<h2>Conversions</h2>{''.join(sections)}</body></html>
"""
  save_text(storage.join(out_dir, 'report.html'), page)


def _pair_section(i: int, result, assets: str, converter) -> str:
  """One conversion's section: its scores, and its mels (images) and audio (players)."""
  pair = result.pair
  mels = dict(
    source=feature_files.load_features(pair.source),
    target_reference=feature_files.load_features(pair.reference),
    reconstruction=result.reconstruction_scales[-1],
    conversion=result.converted_mel,
  )
  if pair.parallel:
    mels['target_same_sentence'] = feature_files.load_features(pair.parallel)
  cells, waves = [], {}
  for name, mel in mels.items():
    stem = f'pair{i:02d}_{name}'
    pictures.save_png(storage.join(assets, stem + '.png'), summaries.mel_image(mel, name))
    waves[name] = (
      result.converted_audio(converter.vocoder) if name == 'conversion' else converter.vocoder(mel)
    )
    sr = converter.vocoder.sample_rate
    audio.write_audio(storage.join(assets, stem + '.wav'), waves[name], sr)
    cells.append(
      f'<figure><figcaption>{name}</figcaption><img src="assets/{stem}.png" '
      f'alt="{name} mel"><audio controls src="assets/{stem}.wav"></audio></figure>'
    )
  if i == 0 and world_available():  # the first pair's source and conversion through WORLD
    cells += _world_cells(i, {k: waves[k] for k in ('source', 'conversion')}, assets, sr)
  scales = (
    ('reconstruction', result.reconstruction_scales),
    ('conversion', result.converted_scales),
  )
  for name, outputs in scales:  # a multi-scale model's coarser outputs, as images
    for j, mel in enumerate(outputs[:-1]):
      stem = f'pair{i:02d}_{name}_d{j}'
      pictures.save_png(
        storage.join(assets, stem + '.png'), summaries.mel_image(mel, f'{name} d{j}')
      )
      cells.append(
        f'<figure><figcaption>{name}, scale d{j} ({mel.shape[0]} bands, 1/'
        f'{2 ** (len(outputs) - 1 - j)} frame rate)</figcaption><img '
        f'src="assets/{stem}.png" alt="{name} scale d{j} mel"></figure>'
      )
  return (
    f'<section><h3>{i + 1}. {html.escape(os.path.basename(pair.source))} &rarr; '
    f'{html.escape(pair.target_speaker)}</h3><p>{_scores(result)}</p>{"".join(cells)}'
    f'</section>'
  )


def _world_cells(i: int, waves: dict, assets: str, sample_rate: int) -> list[str]:
  """WORLD's analysis of each wave (envelope, aperiodicity, F0: a picture) and its resynthesis."""
  cells = []
  for name, wave in waves.items():
    stem = f'pair{i:02d}_{name}_world'
    analysed = world.analyse(wave, sample_rate)
    pictures.save_png(storage.join(assets, stem + '.png'), world.picture(analysed, name))
    audio.write_audio(
      storage.join(assets, stem + '.wav'), world.resynthesise(analysed), sample_rate
    )
    cells.append(
      f'<figure><figcaption>{name} through WORLD (analysis, resynthesis)</figcaption><img '
      f'src="assets/{stem}.png" alt="{name} WORLD analysis"><audio controls '
      f'src="assets/{stem}.wav"></audio></figure>'
    )
  return cells


def _scores(result) -> str:
  """A conversion's figures, as the line above its mels."""
  scores = (
    f'log-mel cepstral distortion {result.lmcd_db:.2f} dB (no conversion: '
    f'{result.baseline_lmcd_db:.2f} dB)'
    if result.lmcd_db is not None
    else 'no parallel recording'
  )
  if result.heard:
    scores += ''.join(
      f'<br>{kind} heard as &ldquo;{html.escape(result.heard[kind])}&rdquo; '
      f'(WER {result.wer[kind]:.2f})'
      for kind in ('converted', 'reconstructed', 'unconverted')
    )
  if result.f0:
    f0 = result.f0['converted']
    if f0['f0_corr'] is not None:
      scores += (
        f'<br>F0 against the source: correlation {f0["f0_corr"]:.2f}, '
        f'RMSE {f0["f0_rmse_cents"]:.0f} cents'
      )
  return scores


def summary_lines(metrics: dict, report_dir: str) -> list[str]:
  """The lines an evaluation ends with: its headline figures, then where the rest is (the report in
  `report_dir` last, where the eye lands)."""
  which = 'the model' if metrics['step'] is None else f'step {metrics["step"]}'
  lines = [f'{which}: {metrics["test_utterances"]} test utterances']
  if metrics.get('recon_l1_logmel') is not None:
    lines.append(f'reconstruction: L1 {metrics["recon_l1_logmel"]:.3f} (log10 mel)')
  conversion = metrics.get('conversion') or {}
  if conversion.get('lmcd_dtw_db') is not None:
    lines.append(
      f'conversion: log-mel cepstral distance to the target {conversion["lmcd_dtw_db"]:.2f} dB '
      f'(the unconverted source: {conversion["baseline_lmcd_dtw_db"]:.2f} dB), '
      f'{conversion["parallel_pairs"]} pairs with the same sentence'
    )
  heard = metrics.get('intelligibility') or {}
  if heard.get('available'):
    wer = heard['wer']
    lines.append(
      f'words (pocketsphinx): error rate {wer["converted"]:.2f} converted, '
      f'{wer["reconstructed"]:.2f} reconstructed, {wer["unconverted"]:.2f} unconverted'
    )
  similarity = metrics.get('speaker_similarity') or {}
  if similarity.get('available'):
    lines.append(
      f'speaker: similarity to the target {similarity["to_target"]:.3f}, to the source '
      f'{similarity["to_source"]:.3f}; accepted as the target {similarity["accepted_as_target"]:.0%}'
      f', named among {similarity["speakers"]} speakers {similarity["identified_as_target"]:.0%}'
    )
  lines.append(f'every figure: {storage.join(report_dir, "metrics.json")}')
  lines.append(f'report: {storage.join(report_dir, "report.html")}')
  return lines
