"""Clients for a running ``vinolm serve`` (OpenAI, KServe v2 REST, KServe v2 gRPC).

They talk to the server only over the network, never import an engine, and report the
same measurements as the OpenVINO Model Server demo clients.
"""
