"""Rendering: execute a notebook headless with parameters (papermill), and save it as HTML."""

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


def execute_notebook(
    name: str | Path,
    parameters: dict[str, Any] | None = None,
    *,
    cwd: str | Path | None = None,
    timeout: int = 900,
) -> Any:
    """Run a notebook headless, top to bottom, with parameters injected by papermill.

    Args:
        name: a notebook path or name (see `notebook_path`).
        parameters: values for its `parameters` cell (papermill adds a cell after it).
        cwd: the kernel's working directory (relative tracking URIs resolve there);
            None = the current one.
        timeout: seconds allowed per cell.

    Returns:
        The executed nbformat notebook, outputs included.

    Raises:
        papermill.PapermillExecutionError: a cell raised.
    """
    import papermill

    return papermill.execute_notebook(
        notebook_path(name),
        None,  # keep the executed notebook in memory; `render` writes the HTML
        # papermill writes lists, dicts and scalars as Python literals, anything else
        # (a tuple such as `pair`) as a string: pass sequences as lists
        parameters={
            k: list(v) if isinstance(v, tuple) else v for k, v in (parameters or {}).items()
        },
        kernel_name="python3",
        language="python",
        cwd=str(Path(cwd or Path.cwd()).resolve()),
        execution_timeout=timeout,
        progress_bar=False,
    )


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
