"""Health metrics of the managed database, its targets, and their Prometheus exposition."""
