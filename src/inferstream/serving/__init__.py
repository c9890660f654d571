"""Model serving: repository, ONNX sessions, micro-batching workers (later issues)."""
