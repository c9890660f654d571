"""Apache Beam batch jobs: backfill, export, reference, replay, batch scoring (later issues)."""
