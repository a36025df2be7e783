"""Agent frameworks from PyPI against the real server: LangChain's ``with_structured_output``
(both the json_schema and the function_calling method) and a one-tool OpenAI Agents SDK agent
over ``OpenAIChatCompletionsModel``, end to end on the default model.

``tool_choice="required"`` and ``tool_use_behavior="stop_on_first_tool"`` make the agent
deterministic on a 135M model: the call is forced by the tools' schema, the tool runs, and
its output is the agent's answer.
"""

from __future__ import annotations

import asyncio

import pytest
from agents import (
    Agent,
    ModelSettings,
    OpenAIChatCompletionsModel,
    Runner,
    function_tool,
    set_tracing_disabled,
)
from langchain_openai import ChatOpenAI
from openai import AsyncOpenAI
from pydantic import BaseModel, Field
from tests.e2e.conftest import RunningServer

pytestmark = pytest.mark.slow

MODEL = "smollm2-135m"


class City(BaseModel):
    """A city and the country it is in."""

    name: str = Field(max_length=30)
    country: str = Field(max_length=30)


def chat_model(server: RunningServer) -> ChatOpenAI:
    return ChatOpenAI(model=MODEL, base_url=server.openai_url, api_key="unused", temperature=0,  # type: ignore[arg-type]
                      max_tokens=96, max_retries=0, timeout=120)


@pytest.mark.parametrize("method", ["json_schema", "function_calling"])
def test_langchain_with_structured_output(server: RunningServer, method: str) -> None:
    structured = chat_model(server).with_structured_output(City, method=method)
    city = structured.invoke("Name the capital of France and its country.")
    assert isinstance(city, City) and city.name and city.country


def test_openai_agents_sdk_runs_a_one_tool_agent(server: RunningServer) -> None:
    calls: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """The current weather in a city."""
        calls.append(city)
        return f"It is sunny and 21 degrees in {city}."

    set_tracing_disabled(True)  # no traces are sent anywhere
    client = AsyncOpenAI(base_url=server.openai_url, api_key="unused", max_retries=0, timeout=120)
    agent = Agent(name="weather", instructions="Answer weather questions with the get_weather tool.",
                  tools=[get_weather], model=OpenAIChatCompletionsModel(model=MODEL, openai_client=client),
                  model_settings=ModelSettings(tool_choice="required", temperature=0, max_tokens=64),
                  tool_use_behavior="stop_on_first_tool")

    async def run() -> str:
        async with client:
            result = await Runner.run(agent, "What is the weather in Paris?")
            return str(result.final_output)

    answer = asyncio.run(run())
    assert len(calls) == 1 and calls[0]
    assert answer == f"It is sunny and 21 degrees in {calls[0]}."
