"""The Anthropic Messages API (/v1/messages): protocol (pydantic), serving (protocol <-> ModelService), routes."""
