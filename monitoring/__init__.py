"""Prometheus next to the server: configuration, rules, a launcher and failure drills."""
