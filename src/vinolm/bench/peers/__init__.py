"""Peer benchmarks: other LLM runtimes measured the same way as vinolm, each in its own process."""
