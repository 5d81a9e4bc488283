"""docs/cli.md is what studies.cli_docs generates from the flag definitions, and lists every tool."""
import os

from conftest import ROOT
from studies import cli_docs

REGENERATE = "python -m studies.cli_docs > docs/cli.md"


def test_docs_cli_md_is_up_to_date():
    with open(os.path.join(ROOT, "docs", "cli.md")) as f:
        committed = f.read()
    assert committed == cli_docs.render(), f"docs/cli.md is stale: regenerate it with `{REGENERATE}`"


def test_every_console_script_is_a_documented_tool():
    """cli_docs.tools() reads the console scripts: each names a module with flags and a cli, and the
    committed page has its section (cce-figure: one per figure module)."""
    import importlib

    from figures.cli import FIGURES

    with open(os.path.join(ROOT, "docs", "cli.md")) as f:
        page = f.read()
    tools = cli_docs.tools()
    for module, script in tools:
        mod = importlib.import_module(module)
        assert callable(mod.cli) and hasattr(mod, "FLAGS"), module
        assert f"## `{script}`" in page
    assert [s for _, s in tools if s.startswith("cce-figure")] == [f"cce-figure {name}" for name in FIGURES]
    assert ("cce_tf.train", "cce-train") in tools and len(tools) == 10 + len(FIGURES)
