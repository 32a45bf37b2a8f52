"""Pure per-call routing: pick the virtual host for an authority, then the route.

Virtual host selection follows Envoy and gRFC A27: an exact domain beats a suffix
wildcard (``*.example.com``), which beats a prefix wildcard (``example.*``), which
beats ``*``; among wildcards of one kind the longest pattern wins. Domains compare
case-insensitively. Routes are tried in order; the first that matches wins.

Example::

    vhost = pick_virtual_host(update.virtual_hosts, "reviews:50051")
    route = match_route(vhost.routes, "/reviews.Reviews/Get", {"x-canary": "1"})
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import lru_cache
from urllib.parse import parse_qsl

from meshlib.contract.regex import fullmatcher
from meshlib.xds._route_config import Route, RouteMatch, VirtualHost

__all__ = ["domain_match_rank", "match_route", "pick_virtual_host"]

_EXACT, _SUFFIX, _PREFIX, _UNIVERSAL = 0, 1, 2, 3


def domain_match_rank(pattern: str, host: str) -> tuple[int, int] | None:
    """How well ``pattern`` matches ``host`` (lower is better), or None if it does not.

    The rank is ``(kind, -len(pattern))`` with kinds exact < suffix < prefix < ``*``.
    A pattern with a ``*`` anywhere but at one end matches nothing.
    """
    pattern, host = pattern.lower(), host.lower()
    if pattern == "*":
        return (_UNIVERSAL, 0)
    if "*" not in pattern:
        return (_EXACT, -len(pattern)) if pattern == host else None
    if pattern.startswith("*") and "*" not in pattern[1:]:
        return (_SUFFIX, -len(pattern)) if host.endswith(pattern[1:]) else None
    if pattern.endswith("*") and "*" not in pattern[:-1]:
        return (_PREFIX, -len(pattern)) if host.startswith(pattern[:-1]) else None
    return None


def pick_virtual_host(virtual_hosts: Iterable[VirtualHost], authority: str
                      ) -> VirtualHost | None:
    """The virtual host whose domains best match ``authority``; None if none does."""
    best: tuple[tuple[int, int], VirtualHost] | None = None
    for vhost in virtual_hosts:
        for domain in vhost.domains:
            rank = domain_match_rank(domain, authority)
            if rank is not None and (best is None or rank < best[0]):
                best = (rank, vhost)
    return None if best is None else best[1]


def match_route(routes: Sequence[Route], path: str, headers: Mapping[str, str], *,
                rng: Callable[[], float] = random.random) -> Route | None:
    """The first route of ``routes`` matching the call, or None.

    ``path`` is the gRPC method (``/pkg.Service/Method``) or an HTTP path, with an
    optional ``?query``. ``headers`` has lower-case names, the values of a repeated
    header joined by ``,`` (gRFC A28); ``-bin`` headers never match. ``rng`` returns
    a float in [0, 1) for ``runtime_fraction`` matches (inject it in tests).
    """
    query: Mapping[str, str] | None = None
    bare_path, _, query_text = path.partition("?")
    for route in routes:
        match = route.match
        if not _path_matches(match, bare_path):
            continue
        if not all(not h.name.endswith("-bin") and h.matches(headers) for h in match.headers):
            continue
        if match.query_parameters:
            if query is None:
                query = dict(parse_qsl(query_text, keep_blank_values=True))
            if not all(q.matches(query) for q in match.query_parameters):
                continue
        if match.fraction_percent is not None and rng() * 100 >= match.fraction_percent:
            continue
        return route
    return None


def _path_matches(match: RouteMatch, path: str) -> bool:
    if match.prefix is not None:
        if match.case_sensitive:
            return path.startswith(match.prefix)
        return path.lower().startswith(match.prefix.lower())
    if match.path is not None:
        if match.case_sensitive:
            return path == match.path
        return path.lower() == match.path.lower()
    if match.regex is not None:
        return _compiled(match.regex)(path)
    return False


@lru_cache(maxsize=1024)
def _compiled(regex: str) -> Callable[[str], bool]:
    """Path regexes (RE2) are validated at decode time; compile once per distinct regex.
    A path longer than :data:`~meshlib.contract.regex.MAX_MATCH_LENGTH` matches none."""
    return fullmatcher(regex)
