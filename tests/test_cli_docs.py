"""docs/cli.md is what studies.cli_docs generates from the flag definitions, and lists every tool."""
import os
import tomllib

from conftest import ROOT
from studies import cli_docs

REGENERATE = "python -m studies.cli_docs > docs/cli.md"


def test_docs_cli_md_is_up_to_date():
    with open(os.path.join(ROOT, "docs", "cli.md")) as f:
        committed = f.read()
    assert committed == cli_docs.render(), f"docs/cli.md is stale: regenerate it with `{REGENERATE}`"


def test_every_console_script_is_documented():
    from figures.cli import FIGURES

    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        scripts = tomllib.load(f)["project"]["scripts"]
    documented = {script for _, script in cli_docs.TOOLS}
    expected = {s for s in scripts if s != "cce-figure"} | {f"cce-figure {name}" for name in FIGURES}
    assert documented == expected
    for module, script in cli_docs.TOOLS:
        if not script.startswith("cce-figure"):
            assert scripts[script] == f"{module}:cli"
