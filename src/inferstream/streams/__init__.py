"""Stream processors: ingest/route, index sink, drift monitor (later issues)."""
