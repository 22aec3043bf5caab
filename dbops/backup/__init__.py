"""Backups: stores (local, S3), envelope encryption, manifests, and logical backups."""
