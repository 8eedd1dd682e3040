"""A Cloud Storage emulator on loopback for the tests: gcp-storage-emulator (a registry package), with
the two behaviours of real GCS it lacks and this project relies on added around its handlers:

- reads carry the object's generation (`x-goog-generation`) and honour `ifGenerationNotMatch` (304
  when unchanged), which tensorstore (orbax's writer) relies on when it re-reads an OCDBT manifest;
- uploads honour `ifGenerationMatch` (0: only if absent), GCS's compare-and-swap: the workdir lock
  and tensorstore's manifest commits stand on it.

A fault it can inject: `slow` (PREFIX, SECONDS) holds the first upload of an object whose name starts
with PREFIX for SECONDS before storing it (the rest go through), so a test can kill a writer in the
middle of a checkpoint that cannot complete meanwhile.

With UPLOAD_LOG set in its environment (a file path), it appends `<object name> <bytes>` for every
upload it stores: what a writer costs in traffic (`uploaded_bytes`).

Run as `python -m tests.gcs_emulator PORT BUCKET [PREFIX SECONDS]`; clients find it through the standard variables
(`emulator_env`): STORAGE_EMULATOR_HOST for gcsfs, TENSORSTORE_GCS_HTTP_URL and a fixed token for
tensorstore.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http import HTTPStatus


def emulator_env(port: int) -> dict:
  url = f'http://127.0.0.1:{port}'
  return dict(
    STORAGE_EMULATOR_HOST=url,
    TENSORSTORE_GCS_HTTP_URL=url,
    GOOGLE_AUTH_TOKEN_FOR_TESTING='emulator',
    # gcsfs asks a gRPC control API (which no emulator has) whether a bucket is zonal: skip it.
    GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT='false',
    # google-auth asks the Compute Engine metadata server for credentials when it finds none: not
    # here (no traffic leaves loopback).
    NO_GCE_CHECK='True',
  )


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def start(
  port: int, bucket: str, *fault: str, log=subprocess.DEVNULL, upload_log=None
) -> subprocess.Popen:
  """The emulator in a process of its own on 127.0.0.1:`port`, once it answers (`fault`: PREFIX
  SECONDS, see above; `upload_log`: the UPLOAD_LOG file); RuntimeError when it does not start
  within ten seconds."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  server = subprocess.Popen(
    [sys.executable, '-m', 'tests.gcs_emulator', str(port), bucket, *fault],
    cwd=root,
    stdout=log,
    stderr=subprocess.STDOUT,
    env=dict(os.environ, UPLOAD_LOG=str(upload_log)) if upload_log else None,
  )
  for _ in range(100):
    try:
      urllib.request.urlopen(f'http://127.0.0.1:{port}/', timeout=1)
      return server
    except OSError:
      time.sleep(0.1)
  server.kill()
  raise RuntimeError(f'the storage emulator did not start on port {port}')


def uploaded_bytes(log_path, prefix: str = '') -> int:
  """The bytes of every upload the emulator logged (UPLOAD_LOG) to objects whose names start with
  `prefix`."""
  total = 0
  if not os.path.exists(log_path):  # nothing uploaded yet
    return 0
  with open(log_path) as f:
    for line in f:
      name, size = line.rsplit(' ', 1)
      total += int(size) if name.startswith(prefix) else 0
  return total


def _patch_handlers(slow=None):
  import types
  from http.server import ThreadingHTTPServer

  from gcp_storage_emulator import server
  from gcp_storage_emulator.exceptions import NotFound
  from gcp_storage_emulator.handlers import objects

  # A thread per request (tensorstore sends many at once, and a held upload must not stall the
  # rest), while the emulator's own code, written for one thread, still runs one request at a time.
  server.server = types.SimpleNamespace(HTTPServer=ThreadingHTTPServer)
  one_at_a_time = threading.Lock()
  held = []  # the upload `slow` held (only the first)

  def serialised(handler):
    def handle(*args, **kwargs):
      with one_at_a_time:
        return handler(*args, **kwargs)

    return handle

  def current_generation(storage, bucket, name):
    try:
      return int(storage.get_file_obj(bucket, name)['generation'])
    except NotFound:
      return 0

  def upload_name(request):
    if 'name' in request.query:
      return request.query['name'][0]
    data = request.data
    if isinstance(data, dict):
      return (data.get('meta') or data).get('name')
    return None

  upload_log = os.environ.get('UPLOAD_LOG')

  def logged(insert):
    """`insert` that appends the stored object's name and size to UPLOAD_LOG."""
    if not upload_log:
      return insert

    def log(request, response, storage, *args, **kwargs):
      name = upload_name(request)
      with one_at_a_time:
        before = current_generation(storage, request.params['bucket_name'], name) if name else 0
      result = insert(request, response, storage, *args, **kwargs)
      if name:
        with one_at_a_time:
          try:
            stored = storage.get_file_obj(request.params['bucket_name'], name)
          except NotFound:
            return result
        if int(stored['generation']) != before:
          with open(upload_log, 'a') as f:
            f.write(f'{name} {stored["size"]}\n')
      return result

    return log

  def with_precondition(handler):
    @logged
    def insert(request, response, storage, *args, **kwargs):
      name = upload_name(request)
      if slow and name and name.startswith(slow[0]) and not held:
        held.append(name)
        time.sleep(slow[1])
      wanted = request.query.get('ifGenerationMatch')
      with one_at_a_time:
        if not wanted or 'upload_id' in request.query:
          return handler(request, response, storage, *args, **kwargs)
        bucket = request.params['bucket_name']
        if name is not None and current_generation(storage, bucket, name) != int(wanted[0]):
          response.status = HTTPStatus.PRECONDITION_FAILED
          response.json(dict(error=dict(code=412, message='conditionNotMet')))
          return None
        return handler(request, response, storage, *args, **kwargs)

    return insert

  def with_generation(handler):
    """Reads as GCS answers them: the generation in headers, and its conditions honoured (a
    tensorstore re-read of an unchanged object asks ifGenerationNotMatch and expects 304)."""

    def read(request, response, storage, *args, **kwargs):
      bucket, name = request.params['bucket_name'], request.params.get('object_id')
      generation = current_generation(storage, bucket, name) if name else 0
      unchanged = request.query.get('ifGenerationNotMatch')
      changed = request.query.get('ifGenerationMatch')
      if generation and unchanged and int(unchanged[0]) == generation:
        response.status = HTTPStatus.NOT_MODIFIED
        return
      if changed and int(changed[0]) != generation:
        response.status = HTTPStatus.PRECONDITION_FAILED
        return
      handler(request, response, storage, *args, **kwargs)
      if generation and response.status in (HTTPStatus.OK, HTTPStatus.PARTIAL_CONTENT):
        response['x-goog-generation'] = str(generation)
        response['x-goog-metageneration'] = '1'

    return read

  wrapped = {objects.insert: with_precondition(objects.insert)}
  for read in (objects.download, objects.get):
    wrapped[read] = serialised(with_generation(read))
  server.HANDLERS = tuple(
    (regex, {method: wrapped.get(h) or serialised(h) for method, h in handlers.items()})
    for regex, handlers in server.HANDLERS
  )
  objects.insert = wrapped[objects.insert]  # the router's fallback for uploads without /upload


def main(port: int, bucket: str, slow=None) -> None:
  _patch_handlers(slow)
  from gcp_storage_emulator.server import create_server

  create_server('127.0.0.1', port, in_memory=True, default_bucket=bucket).run()


if __name__ == '__main__':
  main(
    int(sys.argv[1]), sys.argv[2], (sys.argv[3], float(sys.argv[4])) if len(sys.argv) > 4 else None
  )
