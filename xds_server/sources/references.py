"""Cross-object checks: Service references resolve, and conflicts are settled.

Run once every object is parsed. A dangling reference is reported but leaves the
referring object in the model, as the Gateway API does (a missing backend answers
requests with an error; a policy for a missing Service does nothing). Conflicts
follow Gateway API policy precedence (GEP-713): the oldest ``creationTimestamp``
wins, then the alphabetically first ``namespace/name``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TypeVar

from meshlib.contract import Problem
from xds_server.model import Service
from xds_server.sources.fields import ServiceReference, quote
from xds_server.sources.parse_core import SERVICE_NAME_LABEL

__all__ = ["Candidate", "check_references", "precedence_order"]

T = TypeVar("T")

#: ``(creation timestamp or "", namespace, name, value)`` of one contender.
Candidate = tuple[str, str, str, T]

_ROLE_WORDING = {
    "backendRef": "backend Service {svc} not found",
    "parentRef": "parent Service {svc} not found",
    "targetRef": "target Service {svc} not found",
    "EndpointSlice": f"Service {{svc}} (label {SERVICE_NAME_LABEL}) not found",
}


def check_references(
    references: Iterable[ServiceReference],
    services: Mapping[tuple[str, str], Service | None],
) -> list[Problem]:
    """Problems for references to Services (and ports) that do not exist.

    ``services`` maps every declared ``(namespace, name)`` to its Service, or to
    ``None`` when it was declared but invalid: references to it are not reported
    again (the Service's own problems say what is wrong), nor are its ports checked.
    """
    problems: list[Problem] = []
    for ref in references:
        key = (ref.namespace, ref.name)
        if key not in services:
            message = _ROLE_WORDING[ref.role].format(svc=f"{ref.namespace}/{ref.name}")
            problems.append(_problem(ref, ref.field, message))
            continue
        service = services[key]
        if service is None:
            continue
        for path, port in ref.ports:
            message = _missing_port(service, port)
            if message:
                problems.append(_problem(ref, path, message))
    return problems


def _missing_port(service: Service, port: int | str) -> str | None:
    svc = f"Service {service.namespace}/{service.name}"
    if isinstance(port, int):
        if service.port_by_number(port) is not None:
            return None
        have = ", ".join(str(p.port) for p in service.ports) or "none"
        return f"{svc} has no port {port} (ports: {have})"
    if any(p.name == port for p in service.ports):
        return None
    names = ", ".join(quote(p.name) for p in service.ports) or "none"
    if port == "":
        return f"an unnamed port matches no port of {svc} (port names: {names})"
    return f"{svc} has no port named {quote(port)} (port names: {names})"


def _problem(ref: ServiceReference, path: str, message: str) -> Problem:
    return Problem(message=message, source=ref.source, obj=ref.obj, field=path)


def precedence_order(candidates: Sequence[Candidate[T]]) -> list[T]:
    """``candidates`` ordered by Gateway API precedence, the winner first.

    Objects with a ``creationTimestamp`` (RFC 3339 strings sort by time) come first,
    oldest first; then the rest by ``namespace/name``.
    """
    ordered = sorted(candidates, key=lambda c: (c[0] == "", c[0], c[1], c[2]))
    return [c[3] for c in ordered]
