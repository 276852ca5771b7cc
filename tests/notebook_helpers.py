"""Build Jupyter notebooks from module source for tests (a notebook version of a .py submission)."""

from __future__ import annotations

import ast
import base64
import io
from pathlib import Path

import nbformat
from nbformat import v4


def tiny_png() -> bytes:
    """A real 40x30 PNG (Pillow), as a notebook's plot output would hold."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (40, 90, 200)).save(buf, format="PNG")
    return buf.getvalue()


def cells_from_module(source: str) -> list[str]:
    """Split a module at its top-level statements into cells: imports/constants together, one cell per def/class."""
    tree = ast.parse(source)
    lines = source.split("\n")
    cells, current = [], []
    for node in tree.body:
        start = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
        chunk = "\n".join(lines[start - 1:node.end_lineno])
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            if current:
                cells.append("\n".join(current))
                current = []
            cells.append(chunk)
        else:
            current.append(chunk)
    if current:
        cells.append("\n".join(current))
    return cells


def notebook_from_module(source: str, colab_noise: bool = True, markdown: list[str] | None = None):
    """A notebook whose code cells hold the module's statements, with the things a course notebook also has
    (magics, pip, Colab mount, training loop, plots with an image output, prints) when `colab_noise`."""
    nb = v4.new_notebook()
    cells = []
    if colab_noise:
        cells += [v4.new_code_cell("%matplotlib inline\n!pip install -q torchinfo"),
                  v4.new_code_cell("from google.colab import drive\ndrive.mount('/content/drive')")]
    for i, code in enumerate(cells_from_module(source)):
        cells.append(v4.new_markdown_cell(f"### Part {i + 1}"))
        cells.append(v4.new_code_cell(code))
    if colab_noise:
        cells.append(v4.new_code_cell(
            "import matplotlib.pyplot as plt\n"
            "model = VAE(None, None, None, L=2)\n"
            "for epoch in range(1000):\n    loss = model(torch.zeros(1))\n"
            "print('done')"))
        plot = v4.new_code_cell("plt.plot([1, 2, 3])\nplt.show()")
        plot.outputs = [v4.new_output("display_data", data={"image/png": base64.b64encode(tiny_png()).decode(),
                                                            "text/plain": "<Figure>"})]
        cells.append(plot)
    for text in markdown or []:
        cells.append(v4.new_markdown_cell(text))
    nb.cells = cells
    return nb


def write_notebook(nb, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))
    return path
