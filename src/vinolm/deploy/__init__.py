"""Running vinolm past one process: Ray Serve replicas (``ray_serve``); the Dockerfile and
Kubernetes manifests live in the top-level ``deploy/`` folder."""
