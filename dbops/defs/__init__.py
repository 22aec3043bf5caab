"""The thin Dagster layer: one folder per lifecycle step, each exporting ``defs``; domain code lives elsewhere."""
