"""Monitoring: reference profiles, windowed drift, alerts, reports (later issues)."""
