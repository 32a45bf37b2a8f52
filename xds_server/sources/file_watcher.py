"""Watch a config file or directory and yield a new model on every valid change.

Editors and ``kubectl``-style tools replace files by rename, and Kubernetes swaps
ConfigMap mounts by symlink, so the watch is on directories and every event is
checked against the files' content. A change that fails validation is reported and
skipped: the caller keeps serving the previous model.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import watchfiles

from meshlib.contract import ConfigError, Problem
from xds_server.model import MeshModel
from xds_server.sources.yaml_loader import ConfigLoader

__all__ = ["DEFAULT_DEBOUNCE_MS", "DEFAULT_POLL_INTERVAL", "ModelChange", "watch_model"]

log = logging.getLogger(__name__)

# Group the burst of events one save produces; short enough to keep reloads snappy.
DEFAULT_DEBOUNCE_MS = 30
# A safety net for changes no event reports (a symlink target edited elsewhere).
DEFAULT_POLL_INTERVAL = 2.0


@dataclass(frozen=True, slots=True)
class ModelChange:
    """One reload: the new model, or the problems that kept it from loading.

    ``seen_at`` is the monotonic time the change was noticed, for reload latency.
    """

    model: MeshModel | None
    problems: tuple[Problem, ...]
    seen_at: float


async def watch_model(
    path: str | Path,
    *,
    loader: ConfigLoader | None = None,
    stop_event: asyncio.Event | None = None,
    debounce_ms: int = DEFAULT_DEBOUNCE_MS,
    poll_interval: float = DEFAULT_POLL_INTERVAL,
) -> AsyncIterator[ModelChange]:
    """Yield a :class:`ModelChange` after every change of the YAML under ``path``.

    Any file event under the watched directories, and a poll every ``poll_interval``
    seconds, make ``loader`` compare the files' bytes with what it last loaded; only a
    real change reloads. So symlinked files, Kubernetes ConfigMap mounts (an atomic
    ``..data`` symlink swap), renamed directories and edits made while the watch was
    starting are all caught, and editors' temp files cost nothing. ``loader`` (pass
    the one that loaded the initial model) re-parses only the files that changed, so
    a reload takes milliseconds and runs on the loop itself.
    """
    target = Path(path)
    loader = loader or ConfigLoader(target)
    # The unresolved directory (where ConfigMap swaps and renames happen) and, for a
    # symlinked file, the directory of its target (where edits happen).
    roots = {target} if target.is_dir() else {target.parent, target.resolve().parent}
    async for _changes in watchfiles.awatch(
        *sorted(roots),
        debounce=debounce_ms,
        step=10,
        stop_event=stop_event,
        recursive=target.is_dir(),
        rust_timeout=int(poll_interval * 1000),
        yield_on_timeout=True,
    ):
        seen = time.monotonic()
        if not loader.changed():
            continue
        try:
            model = loader.load()
        except ConfigError as err:
            for problem in err.problems:
                log.error("config rejected, still serving the previous one: %s", problem)
            yield ModelChange(None, err.problems, seen)
        except Exception as exc:  # a bug must not end the watch: keep serving
            log.exception("config could not be loaded; still serving the previous one")
            yield ModelChange(None, (Problem(source=str(target), message=repr(exc)),), seen)
        else:
            yield ModelChange(model, (), seen)
