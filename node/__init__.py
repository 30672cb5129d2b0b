"""Simpul node: the running program (config, CLI, HTTP API, carriers)."""
