"""The dg defs folder, loaded automatically (``[tool.dg]`` in pyproject.toml): ``fleet/defs.yaml`` declares every
configured target as one dbops component instance."""
