"""The README's Python example runs as written."""

from __future__ import annotations

from pathlib import Path

import pytest

README = Path(__file__).parent.parent / "README.md"


def test_readme_python_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)  # the example uses the embedded default, sqlite:///flowrt.db
    code = README.read_text().split("## A flow in Python\n\n```python\n")[1].split("```")[0]
    exec(compile(code, str(README), "exec"), {"__name__": "readme"})  # noqa: S102 - our own README
    out = capsys.readouterr().out
    assert out.startswith("COMPLETED") and "RUN_COMPLETED" in out
    assert (tmp_path / "flowrt.db").exists()
