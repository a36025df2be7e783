"""The server: one engine behind the OpenAI API, KServe v2 REST and gRPC, and the web UI."""
