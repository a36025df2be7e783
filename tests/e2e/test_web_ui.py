"""The web UI in a real browser: headless Debian Chromium, driven by Playwright, against the
real ``vinolm serve`` (default model, continuous batching) on loopback, and against one that
serves several models (the default, its INT4 export, an embedding model and a broken folder)
for the model picker.

Every wait is for a condition in the page or in ``/metrics``; the machine is shared, so
timeouts are generous and nothing asserts on speed.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Locator, Page, expect, sync_playwright
from tests.e2e.conftest import RunningServer, start_server

from vinolm.models import prepare

pytestmark = pytest.mark.slow
PageOpener = Callable[[str], Page]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
#: ``make screenshots`` points this at docs/screenshots; a plain test run never writes there.
SCREENSHOTS_ENV = "VINOLM_SCREENSHOTS"
TIMEOUT_MS = 60_000
MAX_NEW_TOKENS = 48  # enough to watch the answer grow, short enough for a shared machine
LONG_PROMPT = "Write a long story about a dragon who learns to bake bread, with many details."

RESPONSE = "#instruct-response textarea"
PERFORMANCE = "#instruct-performance textarea"
PERF_LINE = re.compile(r"Average generation speed: (\d+\.\d) tokens/s\. Total generated tokens: (\d+)")


# -- the server (the shared real `vinolm serve`, tests/e2e/conftest.py) --------------------------
@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the pages are photographed: a temporary folder unless ``$VINOLM_SCREENSHOTS``."""
    folder = Path(os.environ.get(SCREENSHOTS_ENV) or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def base_url(server: RunningServer) -> str:
    return server.base_url


def _wait(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    """Poll ``condition`` (a server-side fact the page cannot show) until true."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _metric(base: str, name: str) -> float:
    text = httpx.get(f"{base}/metrics", timeout=5).text
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def _running(base: str) -> float:
    return _metric(base, "vinolm_requests_running")


def _ui_cancelled(base: str) -> float:
    return _metric(base, 'vinolm_requests_total{protocol="ui",status="499"}')


def _answered(page: Page, base: str, what: str) -> None:
    """The engine has finished and the page has taken the answer's last update: until then the
    session is still busy, and a message or tool result sent would be refused."""
    _wait(lambda: _running(base) == 0, what)
    expect(page.locator('[data-testid="status-tracker"].generating')).to_have_count(0)


# -- the server with several models ---------------------------------------------------------------
CHAT, INT4, EMBED, BROKEN = "smollm2-135m", "smol-int4", "all-minilm-l6-v2", "broken"


@pytest.fixture(scope="module")
def many(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """The default model, its INT4 export under another name, an embedding model and a folder
    that fails to load, all from one ``vinolm serve`` with the UI; only the first loads at start."""
    int4 = prepare(CHAT, "int4", progress=lambda _: None).path
    prepare(EMBED, progress=lambda _: None)
    broken = tmp_path_factory.mktemp("broken")
    (broken / "openvino_model.xml").write_text("<net>not a model</net>")
    with start_server("--model", CHAT, "--model", f"{INT4}={int4}", "--model", EMBED,
                      "--model", f"{BROKEN}={broken}") as server:
        yield server


def _states(base: str) -> dict[str, str]:
    cards = httpx.get(f"{base}/v1/models", timeout=10).json()["data"]
    return {card["id"]: card["state"] for card in cards}


# -- the browser --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert CHROMIUM.exists(), "Debian's chromium is missing: run 'make browser' (no browser download)"
    expect.set_options(timeout=TIMEOUT_MS)
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def new_page(browser: Browser, base_url: str) -> Iterator[PageOpener]:
    """Open ``/ui...`` pages, each in its own browser context (its own session, like another person)."""
    contexts = []

    def open_page(path: str) -> Page:
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        context.set_default_timeout(TIMEOUT_MS)
        contexts.append(context)
        page = context.new_page()
        page.goto(f"{base_url}{path}")
        expect(page.locator("gradio-app")).to_be_visible()
        return page

    yield open_page
    for context in contexts:
        context.close()


def _length_over(page: Page, selector: str, length: int) -> int:
    """Wait until the text in ``selector`` is longer than ``length``; return its new length."""
    page.wait_for_function("([s, n]) => document.querySelector(s).value.length > n",
                           arg=[selector, length], timeout=TIMEOUT_MS)
    return len(page.locator(selector).input_value())


def _performance(page: Page) -> tuple[float, int]:
    """(tokens/s, total tokens) from the performance line."""
    line = page.locator(PERFORMANCE).input_value()
    match = PERF_LINE.fullmatch(line)
    assert match, f"unexpected performance line {line!r}"
    return float(match.group(1)), int(match.group(2))


def _bot_messages(page: Page) -> Locator:
    return page.locator('#chat-log [data-testid="bot"]')


def _user_messages(page: Page) -> Locator:
    return page.locator('#chat-log [data-testid="user"]')


def _send(page: Page, text: str) -> None:
    page.locator("#chat-input textarea").fill(text)
    page.locator("#chat-submit").click()


def _options(page: Page, dropdown: str) -> list[str]:
    """The choices a Gradio dropdown offers (opened, read, closed again)."""
    page.locator(f"{dropdown} input").click()
    options = page.get_by_role("option")
    expect(options.first).to_be_visible()
    names = [text.split("\n")[-1].strip() for text in options.all_inner_texts()]
    page.locator(f"{dropdown} input").blur()
    expect(options).to_have_count(0)
    return names


def _pick(page: Page, dropdown: str, choice: str) -> None:
    page.locator(f"{dropdown} input").click()
    page.get_by_role("option", name=choice, exact=True).click()
    expect(page.locator(f"{dropdown} input")).to_have_value(choice)


def _offer_tools(page: Page, tools: list[dict[str, object]], choice: str) -> None:
    """Open the Tools panel, paste ``tools`` into the editor and pick the tool choice."""
    page.locator("#chat-tools-panel").get_by_text("Tools", exact=True).first.click()
    page.locator("#chat-tools textarea").fill(json.dumps(tools))
    names = [tool["function"]["name"] for tool in tools]  # type: ignore[index]
    expect(page.locator("#chat-tools-status")).to_have_text(f"Offered: {', '.join(names)}")
    _pick(page, "#chat-tool-choice", choice)


def _tool(name: str, description: str, **properties: str) -> dict[str, object]:
    return {"type": "function", "function": {
        "name": name, "description": description,
        "parameters": {"type": "object", "properties": {k: {"type": v} for k, v in properties.items()},
                       "required": list(properties)}}}


WEATHER = _tool("get_weather", "Current weather in a city", city="string")
TIME = _tool("get_time", "The local time in a time zone", zone="string")


def _call_box(page: Page, name: str) -> Locator:
    """A tool call as the chat shows it: a box titled with the function's name."""
    return page.locator("#chat-log .thought-group").filter(has_text=f"\N{HAMMER AND WRENCH} {name}")


def _call_arguments(box: Locator) -> dict[str, object]:
    """The JSON arguments in a call's box (its code block), parsed."""
    expect(box.locator("code").first).to_be_visible()
    return json.loads(box.locator("code").first.inner_text())  # type: ignore[no-any-return]


# -- the tests ------------------------------------------------------------------------------------
def test_instruct_streams_the_answer_and_the_speed_line(new_page: PageOpener, screenshots: Path) -> None:
    page = new_page("/ui/")
    page.locator("#max-new-tokens input[type=number]").fill(str(MAX_NEW_TOKENS))
    page.locator("#max-new-tokens input[type=number]").press("Enter")
    page.locator("#instruct-input textarea").fill(LONG_PROMPT)
    page.locator("#instruct-submit").click()

    lengths = [_length_over(page, RESPONSE, 0)]
    for _ in range(3):  # the box grows while the answer streams
        lengths.append(_length_over(page, RESPONSE, lengths[-1]))
    page.wait_for_function("s => /tokens: [1-9]/.test(document.querySelector(s).value)", arg=PERFORMANCE)
    _, first_total = _performance(page)
    _length_over(page, RESPONSE, len(page.locator(RESPONSE).input_value()))  # filled while streaming
    page.wait_for_function(  # and counting on
        "([s, n]) => +(document.querySelector(s).value.match(/tokens: (\\d+)/) || [0, 0])[1] > n",
        arg=[PERFORMANCE, first_total])

    expect(page.locator('#instruct-response [data-testid="status-tracker"].generating')).to_have_count(0)
    speed, total = _performance(page)  # the engine's own numbers, once the answer is done
    assert speed > 0 and 0 < total <= MAX_NEW_TOKENS
    page.screenshot(path=str(screenshots / "instruct.png"), full_page=True)

    page.locator("#instruct-clear").click()
    for selector in ("#instruct-input textarea", RESPONSE, PERFORMANCE):
        expect(page.locator(selector)).to_have_value("")


def test_too_long_instruction_is_a_message_not_a_frozen_page(new_page: PageOpener, base_url: str) -> None:
    page = new_page("/ui/")
    page.locator("#instruct-input textarea").fill("bread " * 9000)
    page.locator("#instruct-submit").click()
    expect(page.locator(".toast-body").filter(has_text="shorten the message")).to_be_visible()
    expect(page.locator(RESPONSE)).to_have_value("")
    _wait(lambda: _running(base_url) == 0, "the refused request to be released")

    page.locator("#instruct-input textarea").fill(LONG_PROMPT)  # the page still answers
    page.locator("#instruct-submit").click()
    _length_over(page, RESPONSE, 0)
    page.locator("#instruct-clear").click()  # and Clear stops the answer in the engine too
    expect(page.locator(RESPONSE)).to_have_value("")
    _wait(lambda: _running(base_url) == 0, "Clear to stop the answer", 30)


def test_chat_two_turns_then_clear(new_page: PageOpener, base_url: str, screenshots: Path) -> None:
    page = new_page("/ui/chat")
    expect(page.get_by_text("smollm2-135m Chatbot")).to_be_visible()
    _send(page, "Hi! My name is Ada.")
    expect(_bot_messages(page)).to_have_count(1)
    _answered(page, base_url, "the first answer to finish")
    _send(page, "What is my name?")
    expect(_bot_messages(page)).to_have_count(2)
    _answered(page, base_url, "the second answer to finish")

    expect(_user_messages(page)).to_have_text(["Hi! My name is Ada.", "What is my name?"])
    for answer in _bot_messages(page).all():
        expect(answer).not_to_have_text("")
    page.screenshot(path=str(screenshots / "chat.png"), full_page=True)

    page.locator("#chat-clear").click()
    expect(_user_messages(page)).to_have_count(0)
    expect(_bot_messages(page)).to_have_count(0)


def test_stop_cancels_the_generation_in_the_engine(new_page: PageOpener, base_url: str) -> None:
    page = new_page("/ui/chat")
    cancelled_before = _ui_cancelled(base_url)
    _send(page, LONG_PROMPT)
    expect(_bot_messages(page)).to_have_count(1)
    expect(_bot_messages(page).first).not_to_have_text("")
    page.locator("#chat-stop").click()

    _wait(lambda: _running(base_url) == 0, "the running-request count to return to 0", 30)
    assert _ui_cancelled(base_url) == cancelled_before + 1  # it ended by cancellation, not by itself
    stopped = _bot_messages(page).first.inner_text()
    assert stopped.strip()  # the partial answer stays
    _send(page, "Thanks!")  # and the conversation goes on
    expect(_bot_messages(page)).to_have_count(2)
    page.locator("#chat-stop").click()
    _wait(lambda: _running(base_url) == 0, "the second answer to stop", 30)
    expect(_user_messages(page)).to_have_text([LONG_PROMPT, "Thanks!"])


def test_two_sessions_chat_at_once_and_stay_separate(new_page: PageOpener, base_url: str) -> None:
    alice, bob = new_page("/ui/chat"), new_page("/ui/chat")
    _send(alice, "My favourite colour is blue. " + LONG_PROMPT)
    _send(bob, "I collect old trains. " + LONG_PROMPT)
    _wait(lambda: _running(base_url) == 2, "both answers to be generated together")
    for page in (alice, bob):
        expect(_bot_messages(page).first).not_to_have_text("")
        page.locator("#chat-stop").click()
    _wait(lambda: _running(base_url) == 0, "both answers to stop")

    expect(_user_messages(alice)).to_have_text(["My favourite colour is blue. " + LONG_PROMPT])
    expect(_user_messages(bob)).to_have_text(["I collect old trains. " + LONG_PROMPT])
    expect(_bot_messages(alice)).to_have_count(1)
    expect(_bot_messages(bob)).to_have_count(1)


def test_a_named_tool_choice_is_shown_as_a_call_and_a_pasted_result_is_answered(
        new_page: PageOpener, base_url: str) -> None:
    page = new_page("/ui/chat")
    _offer_tools(page, [WEATHER, TIME], "get_weather")
    _send(page, "What is the weather in Paris?")
    box = _call_box(page, "get_weather")
    expect(box).to_have_count(1)
    _answered(page, base_url, "the call to be written")
    arguments = _call_arguments(box)
    assert set(arguments) == {"city"} and isinstance(arguments["city"], str)  # valid against the schema

    page.locator("#chat-tool-result textarea").fill('{"temperature_c": 18, "sky": "sunny"}')
    page.locator("#chat-tool-send").click()
    result = page.locator("#chat-log .thought-group").filter(has_text="get_weather returned")
    expect(result).to_have_count(1)
    expect(result).to_contain_text('"sky": "sunny"')
    _answered(page, base_url, "the answer to the result")
    expect(_bot_messages(page)).to_have_count(3)  # the call, the result, the answer in words
    expect(_bot_messages(page).last).not_to_have_text("")
    expect(page.locator("#chat-tool-result textarea")).to_have_value("")


def test_required_tool_choice_calls_one_of_the_offered_tools(new_page: PageOpener, base_url: str) -> None:
    page = new_page("/ui/chat")
    _offer_tools(page, [WEATHER, TIME], "required")
    _send(page, "What time is it in Tokyo?")
    boxes = page.locator("#chat-log .thought-group").filter(has_text="\N{HAMMER AND WRENCH} get_")
    expect(boxes.first).to_be_visible()
    _answered(page, base_url, "the calls to be written")
    for box in boxes.all():
        name = "get_weather" if "get_weather" in box.inner_text() else "get_time"
        assert set(_call_arguments(box)) == ({"city"} if name == "get_weather" else {"zone"})
    expect(page.locator("#chat-log")).not_to_contain_text('"name"')  # calls, not the raw forced JSON
    page.locator("#chat-tool-result textarea").fill("12:00")
    page.locator("#chat-tool-send").click()  # the result answers the first call
    expect(page.locator("#chat-log .thought-group").filter(has_text="returned")).to_have_count(1)
    _answered(page, base_url, "the answer to the result, if no other call waits")


def test_invalid_tools_json_is_named_on_the_page(new_page: PageOpener, base_url: str) -> None:
    page = new_page("/ui/chat")
    page.locator("#chat-tools-panel").get_by_text("Tools", exact=True).first.click()
    page.locator("#chat-tools textarea").fill('[{"type": "function", "function": {"name": "get_weather",}}]')
    expect(page.locator("#chat-tools-status")).to_contain_text("the tools JSON does not parse")
    expect(page.locator("#chat-tools-status")).to_contain_text("line 1, column")
    _send(page, "What is the weather in Paris?")
    expect(page.locator(".toast-body").filter(has_text="the tools JSON does not parse")).to_be_visible()
    expect(page.locator("#chat-input textarea")).to_have_value("What is the weather in Paris?")  # kept to retry
    expect(_user_messages(page)).to_have_count(0)

    page.locator("#chat-tools textarea").fill('[{"type": "function", "function": {"description": "no name"}}]')
    expect(page.locator("#chat-tools-status")).to_contain_text("tools.0.function.name")
    page.locator("#chat-tool-result textarea").fill("18 degrees")
    page.locator("#chat-tool-send").click()  # nothing was called: said so, nothing sent
    expect(page.locator(".toast-body").filter(has_text="No tool call is waiting")).to_be_visible()
    assert _running(base_url) == 0


def test_the_model_picker_sends_each_session_to_its_model(browser: Browser, many: RunningServer) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    other = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        page, second = context.new_page(), other.new_page()
        for p in (page, second):
            p.set_default_timeout(TIMEOUT_MS * 3)  # a model may load and compile first
            p.goto(f"{many.base_url}/ui/chat")
        # The generating models only, the first picked; picking one loads nothing yet.
        assert _options(page, "#chat-model") == [CHAT, INT4, BROKEN]
        expect(page.locator("#chat-model input")).to_have_value(CHAT)
        _pick(page, "#chat-model", INT4)
        expect(page.get_by_text(f"{INT4} Chatbot")).to_be_visible()
        assert _states(many.base_url)[INT4] == "unloaded"

        _send(page, "Hi! My name is Ada.")  # loads the INT4 export on demand and answers with it
        expect(_bot_messages(page)).to_have_count(1)
        expect(_bot_messages(page).first).not_to_have_text("")
        _wait(lambda: _running(many.base_url) == 0, "the INT4 answer to finish", 120)
        assert _states(many.base_url)[INT4] == "loaded"

        expect(second.locator("#chat-model input")).to_have_value(CHAT)  # the choice is per session
        _send(second, "Hello!")
        expect(_bot_messages(second)).to_have_count(1)
        _wait(lambda: _running(many.base_url) == 0, "the default model's answer to finish")
        assert _states(many.base_url) == {CHAT: "loaded", INT4: "loaded", EMBED: "unloaded", BROKEN: "unloaded"}

        _pick(second, "#chat-model", BROKEN)  # a failed load is a message, and the page goes on
        _send(second, "Are you there?")
        expect(second.locator(".toast-body").filter(has_text="failed to load")).to_be_visible()
        expect(second.locator("#chat-input textarea")).to_have_value("Are you there?")
        expect(_bot_messages(second)).to_have_count(1)
        assert _states(many.base_url)[BROKEN] == "failed"
        _pick(second, "#chat-model", CHAT)
        second.locator("#chat-submit").click()
        expect(_bot_messages(second)).to_have_count(2)
        _wait(lambda: _running(many.base_url) == 0, "the retried answer to finish")
    finally:
        context.close()
        other.close()


def test_the_instruct_page_answers_with_the_picked_model(browser: Browser, many: RunningServer) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS * 3)
        page.goto(f"{many.base_url}/ui/")
        assert _options(page, "#instruct-model") == [CHAT, INT4, BROKEN]
        _pick(page, "#instruct-model", INT4)
        expect(page.locator("#instruct-title")).to_contain_text(f"Question answering with {INT4}")
        page.locator("#max-new-tokens input[type=number]").fill(str(MAX_NEW_TOKENS))
        page.locator("#max-new-tokens input[type=number]").press("Enter")
        page.locator("#instruct-input textarea").fill("Write a haiku about the sea.")
        page.locator("#instruct-submit").click()
        page.wait_for_function("s => /tokens: [1-9]/.test(document.querySelector(s).value)", arg=PERFORMANCE)
        _wait(lambda: _running(many.base_url) == 0, "the answer to finish", 120)
        assert _states(many.base_url)[INT4] == "loaded"
        expect(page.locator(RESPONSE)).not_to_have_value("")
    finally:
        context.close()
