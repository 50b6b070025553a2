"""Conformance cases of the jobs family (dispatcher and agent)."""
