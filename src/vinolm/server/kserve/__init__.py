"""KServe v2 over REST, and the tensor handling it shares with gRPC."""
