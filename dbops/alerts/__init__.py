"""Alerting on missed targets: breach duration, one notification per incident, resolution, retrying sinks."""
