"""The OpenAI Responses API (/v1/responses), stateless: protocol (pydantic), serving, routes."""
