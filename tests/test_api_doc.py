"""docs/api.md is code: its ```python blocks run here, in order, in one namespace, in a temporary
folder, so the documented Python API cannot drift from the package."""
import os
import re

from conftest import ROOT


def blocks(path: str) -> list[str]:
    with open(path) as f:
        return re.findall(r"```python\n(.*?)```", f.read(), flags=re.S)


def test_the_api_doc_runs(tmp_path, monkeypatch, capsys):
    code = blocks(os.path.join(ROOT, "docs", "api.md"))
    assert len(code) >= 4
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for block in code:
        exec(compile(block, "docs/api.md", "exec"), namespace)  # noqa: S102 - the repo's own doc
    report = namespace["report"]
    assert report.target.kind == "model" and os.path.isfile(os.path.join(report.target.results_dir,
                                                                          "attack_suite.json"))
    assert os.path.isfile(tmp_path / "runs" / "api_demo" / "eval" / "detection.json")
    assert os.path.isfile(tmp_path / "runs" / "api_demo" / "eval" / "transferability.json")


def test_the_readme_points_to_the_api_doc():
    with open(os.path.join(ROOT, "README.md")) as f:
        assert "docs/api.md" in f.read()
