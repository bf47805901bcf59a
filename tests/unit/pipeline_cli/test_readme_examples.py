"""The README's questions and `llmops run`'s closing hint are the ones tests/e2e asks the default model."""

from __future__ import annotations

import re
from pathlib import Path

from pipelines.commands.run import EXAMPLE_ANSWERS, EXAMPLE_QUESTION

README = Path(__file__).resolve().parents[3] / "README.md"


def test_every_question_the_readme_asks_is_one_the_e2e_test_checks():
    text = README.read_text()
    cli = re.findall(r'llmops query (?:--\w+ )*"([^"]+)"\s+# (?:prints )?(\S+?)[:\s]', text)
    api = re.findall(r'prompt="Q: ([^"\\]+)\\nA:"', text)
    assert cli and api, "the README lost its query examples"
    for question, answer in cli:
        assert EXAMPLE_ANSWERS.get(question) == answer, f"README: {question!r} -> {answer!r}"
    for question in api:
        assert question in EXAMPLE_ANSWERS, question
    assert EXAMPLE_QUESTION in EXAMPLE_ANSWERS
