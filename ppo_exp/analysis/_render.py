"""Rendering: execute a notebook headless with parameters, and save it as HTML."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Any


def notebook_path(name: str | Path) -> Path:
    """A notebook given as a path, or by name from the shipped notebooks (analysis/)."""
    path = Path(name)
    if path.suffix == ".ipynb" and path.exists():
        return path
    return Path(str(files("ppo_exp.notebooks"))) / f"{path.stem}.ipynb"


def inject_parameters(notebook: Any, parameters: dict[str, Any]) -> Any:
    """Add a cell assigning `parameters` after the cell tagged `parameters` (papermill-style).

    Args:
        notebook: an nbformat notebook (modified in place).
        parameters: names and Python literals.

    Returns:
        The notebook.
    """
    import nbformat

    source = "# Parameters\n" + "".join(f"{k} = {v!r}\n" for k, v in parameters.items())
    cell = nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]})
    tagged = [
        i
        for i, c in enumerate(notebook.cells)
        if "parameters" in c.get("metadata", {}).get("tags", [])
    ]
    notebook.cells.insert(tagged[0] + 1 if tagged else 0, cell)
    return notebook


def execute_notebook(
    name: str | Path,
    parameters: dict[str, Any] | None = None,
    *,
    cwd: str | Path | None = None,
    timeout: int = 900,
) -> Any:
    """Run a notebook headless, top to bottom, with injected parameters.

    Args:
        name: a notebook path or name (see `notebook_path`).
        parameters: values for its `parameters` cell.
        cwd: the kernel's working directory (relative tracking URIs resolve there);
            None = the current one.
        timeout: seconds allowed per cell.

    Returns:
        The executed nbformat notebook, outputs included.

    Raises:
        nbclient.exceptions.CellExecutionError: a cell raised.
    """
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(notebook_path(name), as_version=4)
    inject_parameters(notebook, parameters or {})
    client = NotebookClient(
        notebook,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(Path(cwd or Path.cwd()).resolve())}},
    )
    client.execute()
    return notebook


def render(
    name: str | Path,
    out: str | Path,
    parameters: dict[str, Any] | None = None,
    *,
    cwd: str | Path | None = None,
    exclude_input: bool = False,
) -> Path:
    """Execute a notebook and save it as one standalone HTML file (figures embedded).

    Args:
        name: a notebook path or name (see `notebook_path`).
        out: the HTML file to write (folders are created).
        parameters: values for its `parameters` cell.
        cwd: the kernel's working directory.
        exclude_input: hide the code cells, keeping only their outputs.

    Returns:
        The path written.
    """
    from nbconvert import HTMLExporter

    notebook = execute_notebook(name, parameters, cwd=cwd)
    exporter = HTMLExporter(template_name="lab", exclude_input=exclude_input)
    html, _ = exporter.from_notebook_node(notebook)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(html, encoding="utf-8")
    return out
