"""The JSON Schemas: runwire's single source of truth, shipped as package data.

Read them with :func:`importlib.resources.files` (``files("runwire.schemas")``); the
validator registry in :mod:`runwire.runtime.validation` does this for you.
"""
