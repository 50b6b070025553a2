"""Families of cases: how a family declares itself, the family table, targets, loading.

A family package (``runwire.conformance.jobs``) exposes ``FAMILY``, a :class:`FamilySpec`: the
family name, the modules holding its cases, the extra options its cases read (``--jobs-host``)
and, for TLS interfaces, how to build the client TLS context from those options. The spec
is cheap to import (the CLI and the pytest plugin read it to add options); the case modules
are imported only when the family is run, by :func:`load_family`.

:data:`FAMILIES` maps each family name to its package. A target names the address of one
interface: ``dispatcher=tcp://127.0.0.1:3502`` (see :func:`parse_targets`).
"""

from __future__ import annotations

import importlib
import os
import ssl
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from runwire.runtime.errors import RunwireError, SchemaError
from runwire.runtime.validation import SchemaRegistry

from .case import Case, CaseSet
from .manifest import Manifest, load_packaged_manifest

if TYPE_CHECKING:
    from runwire.runtime.transport.zmq_security import CurveClientSecurity

__all__ = [
    "FAMILIES",
    "ConformanceConfigError",
    "Family",
    "FamilySpec",
    "Option",
    "OptionValue",
    "Target",
    "family_spec",
    "load_family",
    "parse_targets",
    "resolve_options",
]

#: Family name -> the package whose ``FAMILY`` attribute is its :class:`FamilySpec`.
FAMILIES: dict[str, str] = {
    "jobs": "runwire.conformance.jobs",
    "workflow": "runwire.conformance.workflow",
}

#: URL schemes a target may use, by the manifest's transport kind.
SCHEMES_BY_TRANSPORT: Mapping[str, tuple[str, ...]] = {
    "jsonlines": ("tcp", "tls"),
    "websocket": ("ws", "wss"),
    "zmq": ("tcp",),
    "zmq-group": ("tcp",),
}

OptionValue = str | bool | None
"""The value of a family option: a string, True/False for a flag, None when not given."""


class ConformanceConfigError(RunwireError):
    """The suite cannot run as configured: unknown family, missing case module, bad target,
    bad baseline file, a case that does not fit the manifest. The CLI exits with status 2."""


@dataclass(frozen=True)
class Option:
    """An extra option of a family, read by its cases as ``ctx.options[name]``.

    The CLI offers it as ``--<name with - for _>`` (``--jobs-host``); the pytest plugin as
    ``--runwire-<same>`` and the ini key ``runwire_<name>``.

    Attributes:
        name: key in ``ctx.options`` (snake_case).
        help: one line for ``--help``.
        flag: True for an on/off switch (value True/False, default False).
        metavar: placeholder in ``--help``.
        default: value when neither the option nor `env` is given.
        env: environment variable read when the option is not given.
        secret: the value is a credential: reports show ``"***"`` instead.
    """

    name: str
    help: str
    flag: bool = False
    metavar: str = "VALUE"
    default: str | None = None
    env: str | None = None
    secret: bool = False

    @property
    def cli_flag(self) -> str:
        """``--jobs-host`` for name ``jobs_host``."""
        return "--" + self.name.replace("_", "-")


TlsContextFactory = Callable[[str, Mapping[str, OptionValue]], ssl.SSLContext]
"""(interface name, family options) -> client TLS context for a ``tls://`` target."""

ZmqSecurityFactory = Callable[[str, Mapping[str, OptionValue]], "CurveClientSecurity | None"]
"""(target name, family options) -> the CurveZMQ client keys for a ZeroMQ target, or None
for plain TCP. May raise :class:`~runwire.conformance.case.CaseSkip` when the options give
neither keys nor an explicit choice of plain TCP."""


@dataclass(frozen=True)
class FamilySpec:
    """What a family declares about itself (cheap to import).

    Attributes:
        name: the family (``jobs``), also the first segment of its case ids.
        title: one line for ``--help``.
        case_modules: modules that each expose ``CASES``, a :class:`CaseSet` of this family.
        options: the family's extra options.
        tls_context: builds the client TLS context for ``tls://`` targets from the options;
            default: the system's trust store with hostname checking.
        zmq_security: the CurveZMQ client keys for ZeroMQ targets, from the options; default:
            plain TCP.
        manifest: the manifest document; default: the packaged
            ``schemas/<name>/protocol.json`` (override for families outside runwire, tests).
        schema_documents: extra schema documents ({`$id`: document}) added to the packaged
            ones, for families whose schemas are not packaged with runwire.
        target_help: what a server under test must offer, in a few lines (``--help``).
    """

    name: str
    title: str
    case_modules: tuple[str, ...]
    options: tuple[Option, ...] = ()
    tls_context: TlsContextFactory | None = None
    zmq_security: ZmqSecurityFactory | None = None
    manifest: Mapping[str, Any] | None = None
    schema_documents: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    target_help: str = ""

    def option(self, name: str) -> Option:
        """The option called `name`. Raises KeyError if none."""
        for option in self.options:
            if option.name == name:
                return option
        raise KeyError(f"family {self.name!r} has no option {name!r}")


@dataclass(frozen=True)
class Target:
    """Where one interface of the server under test listens.

    Attributes:
        interface: the interface name (``dispatcher``).
        scheme: ``tcp``, ``tls``, ``ws``, ``wss``.
        host: host name or address (IPv6 without brackets).
        port: TCP port.
        path: the resource path (websocket), else "".
        socket: for a target naming one of an interface's extra sockets (``publish`` of a
            ZeroMQ interface), that socket's name; `interface` is then the interface it
            belongs to. None for an interface's own target.
    """

    interface: str
    scheme: str
    host: str
    port: int
    path: str = ""
    socket: str | None = None

    @property
    def name(self) -> str:
        """The target's name as given: the socket's for an extra socket, else the
        interface's."""
        return self.socket or self.interface

    @property
    def address(self) -> str:
        """``scheme://host:port[path]``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}{self.path}"

    @property
    def tls(self) -> bool:
        """True when the connection must use TLS from the first byte."""
        return self.scheme in ("tls", "wss")

    def __str__(self) -> str:
        return f"{self.name}={self.address}"


@dataclass(frozen=True)
class Family:
    """A loaded family: its spec, manifest, schema registry and checked cases (sorted by id)."""

    spec: FamilySpec
    manifest: Manifest
    registry: SchemaRegistry
    cases: tuple[Case, ...]

    @property
    def name(self) -> str:
        return self.spec.name

    def case(self, case_id: str) -> Case:
        """The case with this id. Raises KeyError if none."""
        for case in self.cases:
            if case.id == case_id:
                return case
        raise KeyError(f"family {self.name!r} has no case {case_id!r}")


def family_spec(name: str) -> FamilySpec:
    """The :class:`FamilySpec` of family `name`, from :data:`FAMILIES`.

    Raises:
        ConformanceConfigError: unknown family, or its package does not declare ``FAMILY``.
    """
    module_name = FAMILIES.get(name)
    if module_name is None:
        known = ", ".join(sorted(FAMILIES)) or "none"
        raise ConformanceConfigError(f"unknown family {name!r} (known: {known})")
    module = importlib.import_module(module_name)
    spec = getattr(module, "FAMILY", None)
    if not isinstance(spec, FamilySpec) or spec.name != name:
        raise ConformanceConfigError(
            f"{module_name} must define FAMILY = FamilySpec(name={name!r}, ...)"
        )
    return spec


def _registry(spec: FamilySpec) -> SchemaRegistry:
    package = SchemaRegistry.from_package()
    if not spec.schema_documents:
        return package
    return SchemaRegistry.from_documents({**package.documents, **spec.schema_documents})


def load_family(spec: FamilySpec | str) -> Family:
    """Load a family's manifest and cases, and check every case against the manifest.

    Each case gets its ``operations``: the manifest operation whose conformance id is the
    longest prefix of the case id, plus its ``exercises``.

    Raises:
        ConformanceConfigError: a case module is missing or has no ``CASES`` of this family,
            a case id repeats across modules, a case names an interface or operation the
            manifest lacks, or the manifest is unusable.
    """
    if isinstance(spec, str):
        spec = family_spec(spec)
    try:
        registry = _registry(spec)
        manifest = (
            Manifest.from_json(spec.manifest, registry)
            if spec.manifest is not None
            else load_packaged_manifest(spec.name, registry)
        )
    except SchemaError as exc:
        raise ConformanceConfigError(f"family {spec.name}: {exc}") from exc
    if manifest.family != spec.name:
        raise ConformanceConfigError(
            f"family {spec.name}: its manifest is for family {manifest.family!r}"
        )
    found: dict[str, Case] = {}
    for module_name in spec.case_modules:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and (
                exc.name == module_name or module_name.startswith(exc.name + ".")
            ):
                raise ConformanceConfigError(
                    f"family {spec.name} has no cases yet: module {module_name} is missing"
                ) from exc
            raise
        case_set = getattr(module, "CASES", None)
        if not isinstance(case_set, CaseSet) or case_set.family != spec.name:
            raise ConformanceConfigError(
                f"{module_name} must define CASES = CaseSet({spec.name!r}) with its cases"
            )
        for case in case_set:
            if case.id in found:
                raise ConformanceConfigError(f"case {case.id} is registered by two modules")
            found[case.id] = _resolve(case, manifest)
    return Family(
        spec=spec,
        manifest=manifest,
        registry=registry,
        cases=tuple(sorted(found.values(), key=lambda c: c.id)),
    )


def _resolve(case: Case, manifest: Manifest) -> Case:
    """`case` with its operations filled in; raises ConformanceConfigError if it does not
    fit `manifest`."""
    try:
        manifest.interface(case.interface)
    except KeyError as exc:
        raise ConformanceConfigError(f"case {case.id}: {exc.args[0]}") from None
    names = manifest.target_names()
    for name in case.interfaces:
        if name not in names:
            raise ConformanceConfigError(f"case {case.id}: {_unknown_target(manifest, name)}")
    operations = []
    primary = manifest.operation_of(case.id)
    if primary is not None:
        operations.append(primary.conformance_id)
    for conformance_id in case.exercises:
        try:
            manifest.operation(conformance_id)
        except KeyError as exc:
            raise ConformanceConfigError(f"case {case.id}: exercises= {exc.args[0]}") from None
        if conformance_id not in operations:
            operations.append(conformance_id)
    return replace(case, operations=tuple(operations))


def _unknown_target(manifest: Manifest, name: str) -> str:
    """Why `name` is not a target name of `manifest`."""
    names = manifest.target_names()
    if len(names) == len(manifest.interfaces):  # no extra sockets: name the interfaces
        known = ", ".join(i.name for i in manifest.interfaces)
        return f"family {manifest.family!r} has no interface {name!r} (it has: {known})"
    return (
        f"family {manifest.family!r} has no interface or socket {name!r} "
        f"(targets: {', '.join(names)})"
    )


def parse_targets(values: Iterable[str], manifest: Manifest) -> dict[str, Target]:
    """Parse ``--target`` values into {interface: Target}.

    Each value is ``INTERFACE=SCHEME://HOST[:PORT][PATH]``; the ``INTERFACE=`` part may be
    left out when the family has one interface (and no extra socket). A missing port is the
    interface's default port from the manifest. A ZeroMQ interface's extra sockets are
    targets of their own, by socket name (``publish=tcp://HOST:PORT``), keyed by that name.

    Raises:
        ConformanceConfigError: unknown interface, an interface given twice, a scheme the
            interface's transport does not use, no host, or no port and no default.
    """
    targets: dict[str, Target] = {}
    names = [i.name for i in manifest.interfaces]
    known = manifest.target_names()
    for value in values:
        name, sep, url = value.partition("=")
        if not sep or "://" in name:
            if len(known) != 1:
                raise ConformanceConfigError(
                    f"target {value!r}: name the interface, e.g. {names[0]}={value} "
                    f"(targets: {', '.join(known)})"
                )
            name, url = names[0], value
        if name not in known:
            raise ConformanceConfigError(f"target {value!r}: {_unknown_target(manifest, name)}")
        interface, socket = known[name]
        if name in targets:
            raise ConformanceConfigError(f"target for interface {name!r} given twice")
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise ConformanceConfigError(f"target {value!r}: {exc}") from None
        schemes = SCHEMES_BY_TRANSPORT.get(interface.transport_kind)
        if not parts.scheme or (schemes is not None and parts.scheme not in schemes):
            allowed = ", ".join(f"{s}://" for s in schemes or ("tcp",))
            raise ConformanceConfigError(
                f"target {value!r}: interface {name!r} ({interface.transport_kind}) takes "
                f"{allowed} addresses"
            )
        if not parts.hostname:
            raise ConformanceConfigError(f"target {value!r}: no host")
        port = port if port is not None else (None if socket else interface.default_port)
        if port is None:
            raise ConformanceConfigError(f"target {value!r}: give a port")
        targets[name] = Target(
            interface.name, parts.scheme, parts.hostname, port, parts.path, socket=socket
        )
    return targets


def resolve_options(
    spec: FamilySpec,
    given: Mapping[str, OptionValue],
    environ: Mapping[str, str] | None = None,
) -> Mapping[str, OptionValue]:
    """Every option of `spec` with its value: given, else its environment variable, else
    its default (False for flags, None otherwise).

    Raises:
        ConformanceConfigError: `given` names an option the family does not have.
    """
    environ = os.environ if environ is None else environ
    known = {o.name for o in spec.options}
    unknown = sorted(set(given) - known)
    if unknown:
        raise ConformanceConfigError(
            f"family {spec.name} has no option {', '.join(unknown)} "
            f"(options: {', '.join(sorted(known)) or 'none'})"
        )
    values: dict[str, OptionValue] = {}
    for option in spec.options:
        value = given.get(option.name)
        if value is None and option.env and option.env in environ:
            raw = environ[option.env]
            value = raw.lower() in ("1", "true", "yes", "on") if option.flag else raw
        if value is None:
            value = False if option.flag else option.default
        values[option.name] = value
    return MappingProxyType(values)


def describe_option_values(
    spec: FamilySpec, values: Mapping[str, OptionValue]
) -> Sequence[tuple[str, OptionValue, bool]]:
    """(name, value, secret) for reports; secret values that are set become ``"***"``."""
    shown = []
    for option in spec.options:
        value = values.get(option.name)
        if option.secret and value not in (None, False, ""):
            value = "***"
        shown.append((option.name, value, option.secret))
    return shown
