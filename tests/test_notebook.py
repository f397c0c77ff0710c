"""examples/quickstart.ipynb, executed by nbclient in a real Jupyter kernel (where an asyncio
loop already runs, so `flowtel.ingest_sync` has to get out of its way)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

NOTEBOOK = Path(__file__).resolve().parent.parent / "examples" / "quickstart.ipynb"
EVENTS = 5_000


def _text(cell: Any) -> str:
    return "".join(
        output.get("text", "") or "".join(output.get("data", {}).get("text/plain", ""))
        for output in cell.get("outputs", [])
    )


@pytest.mark.e2e
def test_quickstart_notebook_runs_in_a_kernel(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")  # jupyter_core warns without it
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        KernelSpecManager().get_kernel_spec("python3")
    except NoSuchKernel:
        pytest.skip("no python3 Jupyter kernel here (pip install ipykernel)")
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("FLOWTEL_NOTEBOOK_EVENTS", str(EVENTS))

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    assert not any(cell.get("outputs") for cell in notebook.cells), "commit it without outputs"
    client = nbclient.NotebookClient(
        notebook,
        timeout=120,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()  # raises CellExecutionError, with the cell and its traceback, on failure

    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    text = "\n".join(_text(cell) for cell in code)
    assert f"complete: {EVENTS:,} new events" in text, text
    assert f"exact: {EVENTS:,} of {EVENTS:,} events stored" in text, text
    assert "minutes, from 20" in text, text
    images = [
        output
        for cell in code
        for output in cell.get("outputs", [])
        if "image/png" in output.get("data", {})
    ]
    assert len(images) == 1, "the events-per-minute plot"
