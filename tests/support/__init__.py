"""Reusable helpers for the tests: the local registry, moto, base images, git workspaces."""
