"""The OpenAI-compatible API: protocol (pydantic), serving (protocol <-> ModelService), routes."""
