"""Running the notebooks/ notebooks in tests: their parameters cell replaced, top to bottom.

The parameters cell (tagged 'parameters', as papermill expects) holds plain assignments; a test
replaces it with its own values and executes the notebook from notebooks/, as Jupyter opens it
in a clone, so that the notebook finds the checkout itself.
"""

import ast
import os
import pathlib
import re
from typing import Mapping, Sequence

import nbclient
import nbformat
import numpy as np
from jupyter_client.kernelspec import NATIVE_KERNEL_NAME, KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from PIL import Image

NOTEBOOKS = pathlib.Path(__file__).resolve().parent.parent / 'notebooks'


def read(name: str) -> nbformat.NotebookNode:
  """notebooks/`name` as saved."""
  return nbformat.read(NOTEBOOKS / name, as_version=4)


def parameters_cell(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
  cells = [cell for cell in nb.cells if 'parameters' in cell.metadata.get('tags', [])]
  assert len(cells) == 1, 'exactly one cell must be tagged "parameters"'
  assert cells[0].cell_type == 'code'
  return cells[0]


def assert_saved_clean(nb: nbformat.NotebookNode, parameters: Sequence[str]) -> None:
  """Valid, no outputs, and a parameters cell assigning exactly `parameters`, in order."""
  nbformat.validate(nb)
  assert nb.nbformat == 4 and nb.metadata.kernelspec.name == 'python3'
  for cell in nb.cells:
    if cell.cell_type == 'code':
      assert cell.outputs == [] and cell.execution_count is None, cell.source[:80]
  # Plain assignments only, so that papermill (or execute below) can override every one.
  body = ast.parse(parameters_cell(nb).source).body
  assert all(isinstance(node, ast.Assign) for node in body)
  assert [node.targets[0].id for node in body] == list(parameters)


def kernel_manager() -> AsyncKernelManager:
  """A manager for ipykernel in this interpreter, whatever kernelspecs are installed: with no
  kernel directories, jupyter_client falls back to ipykernel's own spec (sys.executable)."""
  specs = KernelSpecManager(kernel_dirs=[])
  return AsyncKernelManager(kernel_name=NATIVE_KERNEL_NAME, kernel_spec_manager=specs)


def one_device_environment() -> dict:
  """This environment without conftest's 8 virtual CPU devices: one device compiles faster."""
  env = dict(os.environ)
  env['XLA_FLAGS'] = re.sub(r'--xla_force_host_platform_device_count=\d+', '', env['XLA_FLAGS'])
  return env


def execute(
  name: str, values: Mapping[str, object], env: dict | None = None
) -> nbformat.NotebookNode:
  """notebooks/`name` run top to bottom with its parameters set to `values` (all of them, in
  the cell's order) and the kernel in `env` (None: this process's); the executed notebook.
  Raises CellExecutionError, with the traceback, if any cell fails."""
  nb = read(name)
  cell = parameters_cell(nb)
  saved = [node.targets[0].id for node in ast.parse(cell.source).body]
  assert list(values) == saved, f'values for {saved}, in that order; got {list(values)}'
  cell.source = '\n'.join(f'{key} = {value!r}' for key, value in values.items())
  client = nbclient.NotebookClient(
    nb, timeout=600, km=kernel_manager(), resources={'metadata': {'path': str(NOTEBOOKS)}}
  )
  client.execute(**({} if env is None else {'env': env}))
  return nb


def stream_text(cell: nbformat.NotebookNode) -> str:
  return ''.join(out.get('text', '') for out in cell.outputs if out.output_type == 'stream')


def picture(path: pathlib.Path) -> np.ndarray:
  """The PNG at `path` as uint8 RGB [H, W, 3]."""
  with Image.open(path) as image:
    assert image.format == 'PNG'
    return np.asarray(image.convert('RGB'))


def assert_not_blank(pixels: np.ndarray, min_colours: int) -> None:
  colours = np.unique(pixels.reshape(-1, 3), axis=0)
  assert pixels.std() > 20 and len(colours) >= min_colours, (pixels.std(), len(colours))
