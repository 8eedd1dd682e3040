"""notebooks/quickstart.ipynb runs from top to bottom as a user runs it (the tiny preset trained in the
notebook), so it cannot rot: a conversion played, the mels drawn, no cell failing."""

import pytest

from tests.conftest import REPO


def test_the_quickstart_notebook_runs():
  nbformat = pytest.importorskip('nbformat')
  nbclient = pytest.importorskip('nbclient')
  notebook = nbformat.read(REPO / 'notebooks' / 'quickstart.ipynb', as_version=4)
  client = nbclient.NotebookClient(
    notebook, timeout=600, resources={'metadata': {'path': str(REPO / 'notebooks')}}
  )
  client.execute()  # raises CellExecutionError naming the cell that failed
  outputs = [o for cell in notebook.cells if cell.cell_type == 'code' for o in cell.outputs]
  played = [o for o in outputs if '<audio' in o.get('data', {}).get('text/html', '')]
  drawn = [o for o in outputs if 'image/png' in o.get('data', {})]
  assert len(played) == 1 and len(drawn) == 1, [o.get('data', {}).keys() for o in outputs]
