"""The bench's prompts at the default model's whole context, with its real tokenizer.

Near 8,190 tokens several variants' cut at exactly ``n`` ends inside a word whose pieces
merge when the text is tokenized again (``n - 1`` tokens), and no nearby cut gives ``n``:
the tools refused a prompt of the whole context (`ValueError`) for those variants.
"""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from vinolm.bench.schema import prompt_ids, prompt_text
from vinolm.models import PreparedModel

pytestmark = pytest.mark.slow


def test_every_variant_has_the_exact_length_up_to_the_whole_context(default_model: PreparedModel) -> None:
    tok = AutoTokenizer.from_pretrained(default_model.path)

    def tokenize(text: str) -> list[int]:
        return tok.encode(text, add_special_tokens=False)

    lengths, variants = range(8184, 8193), range(8)
    plain_cut_merges = 0
    for n in lengths:
        for variant in variants:
            assert len(tokenize(prompt_text(tokenize, tok.decode, n, variant))) == n, (n, variant)
            plain_cut_merges += len(tokenize(tok.decode(prompt_ids(tokenize, n, variant)))) != n
    assert plain_cut_merges, "no case here needs more than the plain cut: the test no longer covers the merge"
