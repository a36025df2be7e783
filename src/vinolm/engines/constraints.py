"""One place that turns a :class:`~vinolm.types.Constraint` into what each engine enforces.

Greedy output under a constraint must be the same on every engine, so every engine must
allow the same tokens at every step. openvino-genai enforces constraints with xgrammar;
the native and optimum engines use llguidance (no torch needed, numpy masks). The two
libraries disagree on what a JSON schema means (free whitespace or not, extra properties,
property order), so vinolm never hands either of them a schema: a schema, "any JSON
object" and a choice list become one grammar text (GBNF, which both parse; schemas in
``json_grammar.py``, in one canonical JSON layout). Regexes go to both libraries as they
are. Both libraries read the token vocabulary the same way (the bytes of the detokenizer
IR's ``VocabDecoder``, which is what genai gives xgrammar), and the stop tokens are only
allowed where the grammar accepts.

What is cached: the grammar text per constraint, the llguidance tokenizer per model
folder and a compiled matcher per (tokenizer, constraint); each sequence gets a copy.
"""

from __future__ import annotations

import functools
import json
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vinolm.engines.json_grammar import (
    JSON_RULES,
    check_depth,
    gbnf_literal,
    is_lexeme,
    schema_grammar,
    tool_calls_grammar,
)
from vinolm.errors import EngineError, InvalidRequest
from vinolm.types import Constraint, GenerationParams, check_text

_LARK_OPTIONS = '%llguidance {"no_forcing": true}\n'


@dataclass(frozen=True)
class CompiledConstraint:
    """A constraint in the forms the engines take: GBNF text or a regex, and llguidance's grammar."""

    kind: str
    gbnf: str | None
    regex: str | None
    llguidance: str

    def genai_config(self, genai: Any) -> Any:
        """openvino-genai's ``StructuredOutputConfig`` (xgrammar) for this constraint."""
        if self.regex is not None:
            return genai.StructuredOutputConfig(regex=self.regex)
        return genai.StructuredOutputConfig(grammar=self.gbnf)


# -- checking a request -------------------------------------------------------------------


def check_params(params: GenerationParams, sequences: bool = True) -> CompiledConstraint | None:
    """Compile the request's constraint (cached) and refuse what cannot go with one;
    every engine calls this from ``check``, before anything is queued. ``sequences``:
    the engine keeps one grammar state per returned sequence (native, optimum: a
    :class:`TokenMask` per row), so ``num_return_sequences`` > 1 is fine."""
    constraint = params.constraint
    if constraint is None:
        return None
    if params.num_beams > 1:
        raise InvalidRequest("beam search cannot be combined with a constraint; use num_beams 1",
                             param="num_beams")
    if params.num_return_sequences > 1 and not sequences:
        raise InvalidRequest("a constrained request returns one sequence on this engine; use "
                             "n / num_return_sequences 1, or --engine native or optimum",
                             param="num_return_sequences")
    if params.ignore_eos:
        raise InvalidRequest("ignore_eos cannot be combined with a constraint: the answer ends where "
                             "the grammar does", param="ignore_eos")
    return compile_constraint(constraint)


def compile_constraint(constraint: Constraint) -> CompiledConstraint:
    """The grammar of ``constraint``; InvalidRequest naming the field when it does not compile."""
    check_depth(constraint.schema)
    try:  # not ASCII-escaped, so the surrogate check below sees what the schema holds
        schema = json.dumps(constraint.schema, allow_nan=False, ensure_ascii=False) \
            if constraint.schema is not None else None
    except (TypeError, ValueError) as exc:
        raise InvalidRequest(f"the JSON schema is not plain JSON: {exc}", param="json_schema") from None
    texts = [(constraint.pattern, "regex"), (constraint.grammar, "grammar"), (schema, "json_schema"),
             *((choice, "choice") for choice in constraint.choices or ())]
    for text, param in texts:  # a lone surrogate reached the grammar libraries as Python's codec error
        if isinstance(text, str):
            check_text(text, param)
    return _compile((constraint.kind, schema, constraint.pattern, constraint.grammar, constraint.choices,
                     constraint.tool_format))


@functools.lru_cache(maxsize=256)
def _compile(key: tuple[Any, ...]) -> CompiledConstraint:
    kind, schema, pattern, grammar, choices, tool_format = key
    if kind == "regex":
        _check_regex(pattern)
        return _compiled(kind, None, pattern, "regex")
    if kind == "json_schema":
        text = schema_grammar(json.loads(schema))
    elif kind == "tool_calls":
        text = tool_calls_grammar(json.loads(schema), tool_format)
    elif kind == "json_object":
        text = "root ::= object\n" + JSON_RULES
    elif kind == "choice":
        text = "root ::= " + " | ".join(gbnf_literal(c) for c in choices) + "\n"
    else:
        text = grammar
    return _compiled(kind, text, None, "grammar" if kind == "grammar" else kind)


#: Regex syntax llguidance (Rust's regex) reads but xgrammar refuses or reads otherwise (checked
#: against xgrammar 0.1.31, genai's): refused here, so genai never fails a batch step on it.
_REGEX_REFUSED = (
    (re.compile(r"\\[pP]"), "Unicode property classes (\\p{...})"),
    (re.compile(r"\(\?[^:]"), "inline flags and named groups ((?i), (?P<name>...); use (?:...) to group)"),
    (re.compile(r"\[:\w+:\]"), "POSIX classes ([[:alpha:]])"),
    (re.compile(r"&&"), "class intersections (&&)"),
)


def _check_regex(pattern: str) -> None:
    for found, what in _REGEX_REFUSED:
        if found.search(pattern):
            raise InvalidRequest(f"the regex uses {what}, which vinolm does not support", param="regex")


#: GBNF's pieces, as far as telling rules and alternatives apart needs: xgrammar's rule names
#: take dots and dashes (``a.b``), so a lone ``.`` is a reference, not llguidance's any-character.
_GBNF_TOKEN = re.compile(r"""(?P<skip>\#[^\n]*|\s+)|(?P<element>"(?:\\.|[^"\\])*"|\[(?:\\.|[^\]\\])*\])
    |(?P<define>::=)|(?P<name>[A-Za-z0-9_.-]+)|(?P<op>.)""", re.VERBOSE)


def _gbnf_tokens(gbnf: str) -> list[tuple[str | None, str]]:
    """(group, text) of each piece but comments and spaces, then ("end", "")."""
    return [(m.lastgroup, m.group()) for m in _GBNF_TOKEN.finditer(gbnf) if m.lastgroup != "skip"] + [("end", "")]


def _xgrammar_refusal(gbnf: str) -> str | None:
    """What in a user's GBNF llguidance reads but xgrammar (genai's) refuses. xgrammar refuses
    it inside a batch step, where it failed every request in the batch: so it is a 400 here,
    for every engine alike."""
    tokens = _gbnf_tokens(gbnf)
    defined: list[str] = []
    rule, last = "", ""
    for i, (group, text) in enumerate(tokens):
        starts_rule = group == "name" and tokens[i + 1][0] == "define"
        if ((text == "|" and last in ("::=", "|", "(")) or (text == ")" and last == "|")
                or ((starts_rule or group == "end") and last in ("::=", "|"))):
            return f"rule {rule!r} has an empty alternative (nothing after '{last}'); write \"\" for the empty string"
        if starts_rule:
            rule = text
            if rule in defined:
                return f"rule {rule!r} is defined twice; join its alternatives with '|'"
            defined.append(rule)
        elif group == "name" and set(text) == {"."}:
            return "'.' (any character) is not in the grammar language; use a class such as [^\\n]"
        elif text == "{" and re.fullmatch(r"(\d+),(\d+)}", "".join(t for _, t in tokens[i + 1:i + 5])):
            low, high = int(tokens[i + 1][1]), int(tokens[i + 3][1])
            if low > high:
                return f"the repetition {{{low},{high}}} in rule {rule!r} has its bounds the wrong way round"
        last = text
    return None


def _endless(gbnf: str) -> str | None:
    """Rules that can never finish (``root ::= root``, ``x ::= "a" x``): a grammar whose root is
    one accepts no text, and xgrammar then let the model write nothing but end-of-text tokens.
    A rule finishes when one of its alternatives has only items that finish: text, rules that
    finish, or a repeat that may be empty."""
    tokens = _gbnf_tokens(gbnf)
    bodies: dict[str, list[str]] = {}
    body: list[str] = []
    for i, (group, text) in enumerate(tokens):
        if group == "name" and tokens[i + 1][0] == "define":
            body = bodies.setdefault(text, [])
        elif group not in ("define", "end"):
            body.append('""' if group == "element" else text)
    finishing: set[str] = set()
    while True:
        more = {name for name, body in bodies.items() if name not in finishing and _finishes(body, finishing)}
        if not more:
            break
        finishing |= more
    if "root" not in bodies or "root" in finishing:
        return None
    stuck = ", ".join(repr(name) for name in bodies if name not in finishing)
    return f"it accepts no text: rule(s) {stuck} can never finish (every alternative needs the rule again)"


def _finishes(body: list[str], finishing: set[str]) -> bool:
    """Whether a rule body (its tokens, text as ``""``) can derive a finite string."""
    position = 0

    def expression() -> bool:
        nonlocal position
        any_alternative = sequence()
        while position < len(body) and body[position] == "|":
            position += 1
            any_alternative = sequence() or any_alternative
        return any_alternative

    def sequence() -> bool:
        nonlocal position
        every = True
        while position < len(body) and body[position] not in ("|", ")"):
            every = item() and every
        return every

    def item() -> bool:
        nonlocal position
        token = body[position]
        position += 1
        if token == "(":
            done = expression()
            position += 1  # ")"
        else:
            done = token == '""' or token in finishing
        if position < len(body) and body[position] in ("*", "?"):
            position += 1
            return True
        if position < len(body) and body[position] == "+":
            position += 1
        elif position < len(body) and body[position] == "{":
            close = body.index("}", position)
            optional = body[position + 1] == "0"
            position = close + 1
            return done or optional
        return done

    try:
        return expression()
    except (IndexError, ValueError):  # malformed: llguidance names the problem
        return True


def _compiled(kind: str, gbnf: str | None, regex: str | None, param: str) -> CompiledConstraint:
    import llguidance
    if param == "grammar" and (refusal := _xgrammar_refusal(gbnf or "")):
        raise InvalidRequest(f"the grammar does not compile: {refusal}", param=param)
    try:
        if regex is not None:  # \d \w \s as ASCII classes, as xgrammar reads them
            lark = f"start: /{llguidance.regex_to_lark(regex, 'dws')}/"
        else:
            lark = _lark(gbnf or "", lexemes=param != "grammar")
        # no_forcing: text the grammar forces may come in any tokens the model picks, as with
        # xgrammar (by default llguidance allows only the canonical tokenization of it).
        grammar = llguidance.LLMatcher.grammar_from_lark(_LARK_OPTIONS + lark)
        failed, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar)
    except Exception as exc:  # noqa: BLE001 - the GBNF converter raises bare Exception for a bad grammar
        failed, messages = True, [str(exc)]
    if failed:
        what = {"regex": "the regex", "grammar": "the grammar"}.get(param, f"the {param} grammar")
        raise InvalidRequest(f"{what} does not compile: {_summary(messages[0])}", param=param)
    if param == "grammar" and (endless := _endless(gbnf or "")):  # well formed, yet no text ends it
        raise InvalidRequest(f"the grammar {endless}", param=param)
    return CompiledConstraint(kind, gbnf, regex, grammar)


def _lark(gbnf: str, lexemes: bool) -> str:
    """llguidance's Lark for a GBNF grammar. llguidance's converter makes each rule that
    only holds text a lexeme, and its lexer ends a lexeme only where it cannot go on: with
    ``root ::= word "b"`` and ``word ::= [a-z]+`` it refuses "aab", which xgrammar (a plain
    context-free grammar) accepts. So a user's grammar keeps every rule a grammar rule;
    vinolm's own grammars keep only the leaves lexemes (``json_grammar.is_lexeme``), each
    of which ends on a character that cannot continue it (a quote, a digit before a comma)."""
    from llguidance.gbnf_to_lark import GrammarParser, resolve

    rules = GrammarParser().parse(gbnf)
    resolve(rules)
    for rule in rules.values():
        if rule.rule_is_terminal and not (lexemes and is_lexeme(rule.name.lower())):
            rule.rule_is_terminal = False
            rule.name = rule.name.lower()
    return "\n".join(str(rule) for rule in sorted(rules.values(), key=lambda r: r.order)) + "\n"


def _summary(message: str) -> str:
    """The library's reason in one short line (its messages repeat the grammar with carets)."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    reason = next((line for line in lines if line.startswith("error:")), lines[0] if lines else "invalid")
    # "2(20): ..." is a place in llguidance's own translation of the grammar, not in the caller's
    return re.sub(r"^\d+\(\d+\):\s*", "", reason.removeprefix("error:").strip())[:200]


# -- the token mask (native and optimum engines) --------------------------------------------------


def vocabulary_bytes(folder: Path) -> list[bytes]:
    """Each token's bytes as the detokenizer IR's ``VocabDecoder`` holds them: what genai
    gives xgrammar, so both libraries see the same vocabulary (special tokens included,
    as their text)."""
    import openvino as ov
    import openvino_tokenizers  # noqa: F401  (registers the tokenizer operations)

    model = ov.Core().read_model(folder / "openvino_detokenizer.xml")
    decoders = [op for op in model.get_ordered_ops() if op.get_type_name() == "VocabDecoder"]
    if not decoders:
        raise InvalidRequest(f"{folder}'s detokenizer has no vocabulary: constrained output is not "
                             "available for this model", param="constraint")
    nodes = [decoders[-1].input_value(i).get_node() for i in (1, 2, 3)]  # alive while their data is read
    begins, ends = (node.get_data().tolist() for node in nodes[:2])
    raw = nodes[2].get_data().tobytes()
    return [raw[b:e] for b, e in zip(begins, ends, strict=True)]


class _TokenSource:
    """What ``llguidance.TokenizerWrapper`` reads. Like xgrammar on genai's vocabulary, only
    empty tokens count as special; the others (``<|im_start|>`` too) are their text."""

    def __init__(self, tokens: list[bytes], eos_token_id: int, encode: Callable[[str], list[int]]) -> None:
        self.tokens = tokens
        self.eos_token_id = eos_token_id
        self.bos_token_id = None
        self.special_token_ids = [i for i, token in enumerate(tokens) if not token]
        self._encode = encode

    def __call__(self, text: str | bytes) -> list[int]:
        return self._encode(text.decode("utf-8", "replace") if isinstance(text, bytes) else text)


class GrammarVocabulary:
    """llguidance's view of one model's tokenizer; built once per model folder (~0.5 s)."""

    def __init__(self, tokens: list[bytes], eos_token_id: int, encode: Callable[[str], list[int]]) -> None:
        import llguidance

        source = _TokenSource(tokens, eos_token_id, encode)
        self.size = len(tokens)
        self.eos_token_id = eos_token_id
        self.tokenizer = llguidance.LLTokenizer(llguidance.TokenizerWrapper(source), n_vocab=len(tokens))
        self._matchers: dict[str, Any] = {}
        self._lock = threading.Lock()

    def matcher(self, compiled: CompiledConstraint) -> Any:
        """A fresh matcher at the grammar's start: a copy of one compiled per constraint."""
        import llguidance

        with self._lock:
            template = self._matchers.get(compiled.llguidance)
            if template is None:
                template = llguidance.LLMatcher(self.tokenizer, compiled.llguidance, log_level=0)
                if template.is_error():
                    raise InvalidRequest(f"the {compiled.kind} constraint does not compile: "
                                         f"{_summary(template.get_error())}", param=compiled.kind)
                if len(self._matchers) >= 64:  # oldest out: a small LRU
                    self._matchers.pop(next(iter(self._matchers)))
                self._matchers[compiled.llguidance] = template
            else:
                self._matchers[compiled.llguidance] = self._matchers.pop(compiled.llguidance)
            return template.deep_copy()


_VOCABULARIES: dict[str, GrammarVocabulary] = {}
_VOCABULARY_LOCK = threading.Lock()


def vocabulary_for(folder: Path, eos_token_ids: list[int], encode: Callable[[str], list[int]]) -> GrammarVocabulary:
    """The cached :class:`GrammarVocabulary` of the model in ``folder``."""
    key = str(Path(folder).resolve())
    with _VOCABULARY_LOCK:
        if key not in _VOCABULARIES:
            eos = eos_token_ids[0] if eos_token_ids else 0
            _VOCABULARIES[key] = GrammarVocabulary(vocabulary_bytes(Path(folder)), eos, encode)
        return _VOCABULARIES[key]


class TokenMask:
    """One sequence's place in its grammar: which tokens may come next, advanced per token.

    Stop tokens are allowed exactly where the grammar accepts (xgrammar's rule with
    genai's ``stop_token_ids``); the grammar's own view of EOS is replaced by that.
    """

    def __init__(self, vocabulary: GrammarVocabulary, compiled: CompiledConstraint,
                 stop_token_ids: Iterable[int], logits_size: int) -> None:
        import llguidance.numpy as llg_numpy

        self._fill = llg_numpy.fill_next_token_bitmask
        self._matcher = vocabulary.matcher(compiled)
        self._bits = llg_numpy.allocate_token_bitmask(1, vocabulary.size)
        self._size = vocabulary.size
        self._logits_size = logits_size
        self._eos = vocabulary.eos_token_id
        self._stops = np.array(sorted(t for t in stop_token_ids if 0 <= t < logits_size), dtype=np.int64)
        self._ended = False  # a stop token came: a batch row may still receive padding

    def allowed(self) -> np.ndarray:
        """Boolean mask over the logits: True where a token keeps the output in the grammar."""
        self._fill(self._matcher, self._bits)
        bits = np.unpackbits(self._bits.view(np.uint8), bitorder="little")[: self._size].astype(bool)
        if self._logits_size != self._size:  # padded logits: ids past the vocabulary are never text
            bits = np.pad(bits, (0, max(0, self._logits_size - self._size)))[: self._logits_size]
        bits[self._eos] = False
        bits[self._stops] = self._matcher.is_accepting()
        return bits

    def apply(self, logits: np.ndarray) -> np.ndarray:
        """A copy of ``logits`` with every token outside the grammar at -inf."""
        return np.where(self.allowed(), logits, np.float32(-np.inf)).astype(np.float32, copy=False)

    def accept(self, token: int) -> None:
        """Advance past ``token`` (a stop token ends the grammar: nothing to advance, and
        whatever a finished batch row receives after it is padding, not output)."""
        if self._ended or token in self._stops:
            self._ended = True
            return
        if self._matcher.is_stopped():
            return
        if not self._matcher.consume_token(int(token)):
            raise EngineError(f"token {token} is outside the grammar: {self._matcher.get_error()}")
