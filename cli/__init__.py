"""runwire: spec-first wire protocols for steering long-running work.

Subpackages: :mod:`runwire.schemas` (the JSON Schemas, package data),
:mod:`runwire.runtime` (validation, codecs, transports, errors),
:mod:`runwire.generated` (bindings generated from the schemas; never edited by hand),
:mod:`runwire.codegen` (the generator), :mod:`runwire.reference_server`,
:mod:`runwire.conformance` and :mod:`runwire.compat`.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
