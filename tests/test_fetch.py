"""Fetching the original's MelGAN: a real HTTP server on loopback serving a `.pt` the test makes (in
the legacy torch format the published file has), checked by its git blob id, ported, reused; a wrong
file, a cut download and no network refused with nothing left half-written in the cache."""

import dataclasses
import http.server
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

from skipvqvc_jax import checkpoints, fetch, porting, torch_files, vocoders
from skipvqvc_jax.errors import ConfigError
from skipvqvc_jax.models import melgan
from tests.conftest import REPO


@pytest.fixture(scope='module')
def published():
  """(the bytes of a small MelGAN generator's legacy .pt, the generator)."""
  generator = melgan.MelGANGenerator(ngf=4, residual_layers=1, seed=3)
  state_dict = porting.export_state_dict(generator)
  return torch_files.dumps({k: v for k, v in state_dict.items()}, legacy=True), generator


class _Server:
  """Serves `body` at any path; `cut`: announces the whole length but sends half, then closes."""

  def __init__(self, body: bytes, cut: bool = False):
    self.body, self.cut, self.requests = body, cut, 0
    server = self

    class Handler(http.server.BaseHTTPRequestHandler):
      def do_GET(self):  # noqa: N802  (http.server's name)
        server.requests += 1
        self.send_response(200)
        self.send_header('Content-Length', str(len(server.body)))
        self.end_headers()
        self.wfile.write(server.body[: len(server.body) // 2] if server.cut else server.body)
        self.wfile.flush()
        self.close_connection = True

      def log_message(self, *args):
        pass

    self.httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
    self.url = f'http://127.0.0.1:{self.httpd.server_address[1]}/multi_speaker.pt'
    threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

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
  blob = fetch.git_blob_id(str(path))
  monkeypatch.setitem(
    fetch.PUBLISHED, 'melgan', dataclasses.replace(fetch.PUBLISHED['melgan'], blob=blob)
  )


def _left_in(cache) -> list[str]:
  return sorted(
    os.path.relpath(os.path.join(d, f), cache) for d, _, fs in os.walk(cache) for f in fs
  )


def test_the_blob_id_is_gits(tmp_path, published):
  path = tmp_path / 'x.pt'
  path.write_bytes(published[0])
  git = subprocess.run(['git', 'hash-object', str(path)], capture_output=True, text=True)
  assert git.returncode == 0 and fetch.git_blob_id(str(path)) == git.stdout.strip()


def test_download_checks_ports_and_is_reused(published, cache, monkeypatch, tmp_path):
  data, generator = published
  _pin(monkeypatch, data, tmp_path)
  server = _Server(data)
  monkeypatch.setenv('SKIPVQVC_MELGAN_URL', server.url)
  try:
    lines = []
    directory = fetch.fetch('melgan', log=lines.append)
    assert directory == str(cache / 'published' / 'melgan') and server.requests == 1
    assert any('downloading' in line for line in lines)
    assert checkpoints.is_model_dir(directory)
    assert fetch.fetch('melgan') == directory and server.requests == 1  # reused, not downloaded
    vocoder = vocoders.get('melgan')  # the first --vocoder=melgan goes the same way
    assert server.requests == 1
    mel = np.random.default_rng(0).normal(-4, 1, (1, 80, 10)).astype(np.float32)
    np.testing.assert_allclose(vocoder(mel), generator(mel), atol=1e-6)
  finally:
    server.close()
  assert not [f for f in _left_in(cache) if not f.startswith('published/melgan/')]


@pytest.mark.parametrize('fault', ['wrong file', 'cut download'])
def test_a_wrong_or_cut_download_is_refused_and_nothing_is_kept(
  fault, published, cache, monkeypatch, tmp_path
):
  data, _ = published
  _pin(monkeypatch, data, tmp_path)
  served = data[:-8] + b'\0' * 8 if fault == 'wrong file' else data
  server = _Server(served, cut=fault == 'cut download')
  monkeypatch.setenv('SKIPVQVC_MELGAN_URL', server.url)
  try:
    match = 'git blob id is' if fault == 'wrong file' else 'cut short|IncompleteRead'
    with pytest.raises(ConfigError, match=match):
      fetch.fetch('melgan', log=lambda _: None)
  finally:
    server.close()
  assert _left_in(cache) == []  # no partial file, no model directory
  assert not checkpoints.is_model_dir(str(cache / 'published' / 'melgan'))


def _fetch_cli(*args, env):
  return subprocess.run(
    [sys.executable, '-c', 'from skipvqvc_jax import fetch_cli; fetch_cli.run()', *args],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=300,
    env=env,
  )


def test_offline_one_line_says_where_to_put_the_file(published, tmp_path):
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
  by_hand.write_bytes(published[0])  # not the published file: its blob id differs
  result = _fetch_cli('melgan', env=env)
  assert result.returncode == 1 and 'c6dc2e2ab5be6478352deb465c5b584e1d4ba25a' in result.stderr
  assert not (tmp_path / 'cache' / 'skipvqvc_jax' / 'published' / 'melgan').exists()
