"""docs/testing.md shows tests from examples/tests/ (which `make test` runs): each
``def test_...`` block of the doc is there word for word, so the doc cannot drift."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^```python\n(.*?)^```$", re.S | re.M)


def test_every_example_test_in_the_doc_is_in_examples_tests():
    doc = (ROOT / "docs" / "testing.md").read_text()
    examples = "\n".join(p.read_text() for p in (ROOT / "examples" / "tests").glob("test_*.py"))
    shown = [block for block in FENCE.findall(doc)
             if re.match(r"(@pytest\.mark\.\w+\n)?(async )?def test_", block)]
    assert len(shown) >= 6
    for block in shown:
        assert block in examples, f"not in examples/tests/:\n{block}"
