"""Fetching the original's MelGAN: a real HTTP server on loopback serving a `.pt` the test makes (in
the legacy torch format the published file has), checked by its git blob id, ported, reused; a wrong
file, a cut download and no network refused with nothing left half-written in the cache."""

import dataclasses
import http.server
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from skipvqvc_jax import vocoders
from skipvqvc_jax.core.errors import ConfigError
from skipvqvc_jax.models import melgan
from skipvqvc_jax.store import checkpoints, porting, published, torch_files
from tests.conftest import REPO, run_in_repo


@pytest.fixture(scope='module')
def melgan_pt():
  """(the bytes of a small MelGAN generator's legacy .pt, the generator)."""
  generator = melgan.MelGANGenerator(ngf=4, residual_layers=1, seed=3)
  state_dict = porting.export_state_dict(generator)
  return torch_files.dumps({k: v for k, v in state_dict.items()}, legacy=True), generator


class _Server:
  """Serves `body` at any path. `fault`: 'cut' announces the whole length but sends half, then closes;
  'drip' sends one byte every 0.2 s; 'endless' streams without a Content-Length until the client
  goes (`sent` counts the bytes it got out)."""

  def __init__(self, body: bytes, fault: str | None = None):
    self.body, self.fault, self.requests, self.sent = body, fault, 0, 0
    server = self

    class Handler(http.server.BaseHTTPRequestHandler):
      def do_GET(self):  # noqa: N802  (http.server's name)
        server.requests += 1
        self.send_response(200)
        if server.fault != 'endless':
          self.send_header('Content-Length', str(len(server.body)))
        self.end_headers()
        try:
          server.send(self.wfile)
        except (BrokenPipeError, ConnectionResetError):
          pass
        self.close_connection = True

      def log_message(self, *args):
        pass

    self.httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
    self.url = f'http://127.0.0.1:{self.httpd.server_address[1]}/multi_speaker.pt'
    threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

  def send(self, out) -> None:
    if self.fault == 'drip':
      for byte in self.body[:100]:
        out.write(bytes([byte]))
        out.flush()
        time.sleep(0.2)
    elif self.fault == 'endless':
      while self.sent < 400 << 20:
        out.write(bytes(1 << 16))
        self.sent += 1 << 16
    else:
      out.write(self.body[: len(self.body) // 2] if self.fault == 'cut' else self.body)
    out.flush()

  def close(self):
    self.httpd.shutdown()
    self.httpd.server_close()


@pytest.fixture
def cache(tmp_path, monkeypatch):
  monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'cache'))
  return tmp_path / 'cache' / 'skipvqvc_jax'


def _pin(monkeypatch, data: bytes, tmp_path):
  """PUBLISHED['melgan'] pinned to the blob id of `data` (what the real entry pins for the real file)."""
  path = tmp_path / 'pinned.pt'
  path.write_bytes(data)
  blob = published.git_blob_id(str(path))
  monkeypatch.setitem(
    published.PUBLISHED, 'melgan', dataclasses.replace(published.PUBLISHED['melgan'], blob=blob)
  )


def _left_in(cache) -> list[str]:
  return sorted(
    os.path.relpath(os.path.join(d, f), cache) for d, _, fs in os.walk(cache) for f in fs
  )


def test_the_blob_id_is_gits(tmp_path, melgan_pt):
  path = tmp_path / 'x.pt'
  path.write_bytes(melgan_pt[0])
  git = subprocess.run(['git', 'hash-object', str(path)], capture_output=True, text=True)
  assert git.returncode == 0 and published.git_blob_id(str(path)) == git.stdout.strip()


def test_download_checks_ports_and_is_reused(melgan_pt, cache, monkeypatch, tmp_path):
  data, generator = melgan_pt
  _pin(monkeypatch, data, tmp_path)
  server = _Server(data)
  monkeypatch.setenv('SKIPVQVC_MELGAN_URL', server.url)
  try:
    lines = []
    directory = published.fetch('melgan', log=lines.append)
    assert directory == str(cache / 'published' / 'melgan') and server.requests == 1
    assert any('downloading' in line for line in lines)
    assert checkpoints.is_model_dir(directory)
    assert published.fetch('melgan') == directory and server.requests == 1  # reused, not downloaded
    vocoder = vocoders.get('melgan')  # the first --vocoder=melgan goes the same way
    assert server.requests == 1
    mel = np.random.default_rng(0).normal(-4, 1, (1, 80, 10)).astype(np.float32)
    np.testing.assert_allclose(vocoder(mel), generator(mel), atol=1e-6)
  finally:
    server.close()
  assert not [f for f in _left_in(cache) if not f.startswith('published/melgan/')]


@pytest.mark.parametrize('fault', ['wrong file', 'cut download'])
def test_a_wrong_or_cut_download_is_refused_and_nothing_is_kept(
  fault, melgan_pt, cache, monkeypatch, tmp_path
):
  data, _ = melgan_pt
  _pin(monkeypatch, data, tmp_path)
  served = data[:-8] + b'\0' * 8 if fault == 'wrong file' else data
  server = _Server(served, 'cut' if fault == 'cut download' else None)
  monkeypatch.setenv('SKIPVQVC_MELGAN_URL', server.url)
  try:
    match = 'git blob id is' if fault == 'wrong file' else 'cut short|IncompleteRead'
    with pytest.raises(ConfigError, match=match):
      published.fetch('melgan', log=lambda _: None)
  finally:
    server.close()
  assert _left_in(cache) == []  # no partial file, no model directory
  assert not checkpoints.is_model_dir(str(cache / 'published' / 'melgan'))


def _fetch_cli(*args, env):
  return run_in_repo(
    [sys.executable, '-c', 'from skipvqvc_jax.apps import fetch; fetch.run()', *args],
    timeout=300,
    env=env,
  )


def test_offline_one_line_says_where_to_put_the_file(melgan_pt, tmp_path):
  """No network (nothing listens on the URL's port): one line naming the file's page and the path
  to put it at; a copy put there is checked like a download (here: the wrong file, refused)."""
  import socket

  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]  # closed again: nothing listens there
  env = dict(
    os.environ,
    XDG_CACHE_HOME=str(tmp_path / 'cache'),
    SKIPVQVC_MELGAN_URL=f'http://127.0.0.1:{port}/multi_speaker.pt',
  )
  result = _fetch_cli('melgan', env=env)
  assert result.returncode == 1
  assert len(result.stderr.strip().splitlines()) == 1, result.stderr
  by_hand = tmp_path / 'cache' / 'skipvqvc_jax' / 'downloads' / 'multi_speaker.pt'
  assert f'put it at {by_hand}' in result.stderr
  assert 'github.com/descriptinc/melgan-neurips/blob/6488045' in result.stderr
  by_hand.parent.mkdir(parents=True)
  by_hand.write_bytes(melgan_pt[0])  # not the published file: its blob id differs
  result = _fetch_cli('melgan', env=env)
  assert result.returncode == 1 and 'c6dc2e2ab5be6478352deb465c5b584e1d4ba25a' in result.stderr
  assert not (tmp_path / 'cache' / 'skipvqvc_jax' / 'published' / 'melgan').exists()


def test_the_size_bound_holds_the_published_model():
  """max_bytes bounds a legacy .pt of the published generator's state dict, with under 10% to spare
  (the file itself cannot be fetched here; its model can be built)."""
  from skipvqvc_jax import models

  state_dict = porting.export_state_dict(models.build('melgan'))
  size = len(torch_files.dumps(state_dict, legacy=True))
  assert size < published.PUBLISHED['melgan'].max_bytes < 1.1 * size


@pytest.mark.parametrize('fault', ['drip', 'endless'])
def test_a_slow_or_endless_download_is_refused_and_nothing_is_kept(
  fault, melgan_pt, cache, monkeypatch, tmp_path
):
  """A server dripping a byte every 0.2 s is refused once the grace period ends (it kept a download
  going for years); one streaming without end and without a length is refused at the pinned size
  (it was read whole): the server got out little more than that before the client left."""
  data, _ = melgan_pt
  _pin(monkeypatch, data, tmp_path)
  limit = len(data) + 1000
  monkeypatch.setitem(
    published.PUBLISHED,
    'melgan',
    dataclasses.replace(published.PUBLISHED['melgan'], max_bytes=limit),
  )
  monkeypatch.setattr(published, 'RATE_GRACE_SECONDS', 2.0)
  server = _Server(data, fault)
  monkeypatch.setenv('SKIPVQVC_MELGAN_URL', server.url)
  start = time.monotonic()
  try:
    match = (
      'bytes/s, under the 16384 a download needs' if fault == 'drip' else f'sent over {limit} bytes'
    )
    with pytest.raises(ConfigError, match=match):
      published.fetch('melgan', log=lambda _: None)
  finally:
    server.close()
  assert time.monotonic() - start < 20
  if fault == 'endless':
    assert server.sent < limit + (16 << 20), server.sent
  assert _left_in(cache) == []


def test_a_download_killed_leaves_nothing_in_the_cache(melgan_pt, tmp_path):
  """SIGTERM or SIGKILL in the middle of a download: nothing of it is in the cache afterwards (the
  download has no name at any moment), and the progress said what was being fetched."""
  import signal

  data, _ = melgan_pt
  server = _Server(data * 50, 'drip')
  cache = tmp_path / 'cache'
  env = dict(os.environ, XDG_CACHE_HOME=str(cache), SKIPVQVC_MELGAN_URL=server.url)
  try:
    for signum in (signal.SIGTERM, signal.SIGKILL):
      run = subprocess.Popen(
        [sys.executable, '-c', 'from skipvqvc_jax.apps import fetch; fetch.run()', 'melgan'],
        cwd=REPO,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
      )
      said = run.stderr.readline()
      assert 'downloading' in said and server.url in said, said
      time.sleep(1)
      run.send_signal(signum)
      run.wait(timeout=60)
      assert _left_in(cache / 'skipvqvc_jax') == []
  finally:
    server.close()
