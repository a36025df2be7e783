"""The Ollama API (/api/*): protocol (pydantic), serving (protocol <-> ModelService), routes."""
