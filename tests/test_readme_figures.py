"""The README's benchmark tables are exactly what the committed summaries in docs/bench/ produce."""
import pytest

from bench.readme_figures import BLOCK, BLOCKS, README, render_readme

pytestmark = pytest.mark.timeout(30)


def test_readme_blocks_match_committed_summaries():
    text = README.read_text()
    names = [m.group("name") for m in BLOCK.finditer(text)]
    assert names, "README.md has no generated figure blocks"
    assert set(names) <= set(BLOCKS)
    assert render_readme(text) == text, "README figures drifted: run python -m bench.readme_figures --write"


def test_a_changed_figure_is_caught():
    text = README.read_text()
    match = next(BLOCK.finditer(text))
    tampered = text[:match.start("body")] + match.group("body").replace("|", "| 9.99 |", 1) + text[match.end("body"):]
    assert render_readme(tampered) != tampered
