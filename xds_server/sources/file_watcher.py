"""Watch a config file or directory and yield a new model on every valid change.

Editors and ``kubectl``-style tools replace files by rename, so the watch is on the
directory (the parent of a single file) and filtered to YAML files under the path.
A change that fails validation is reported and skipped: the caller keeps serving
the previous model.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import watchfiles

from meshlib.errors import ConfigError, Problem
from xds_server.model import MeshModel
from xds_server.sources.yaml_loader import ConfigLoader

__all__ = ["DEFAULT_DEBOUNCE_MS", "ModelChange", "watch_model"]

log = logging.getLogger(__name__)

# Group the burst of events one save produces; short enough to keep reloads snappy.
DEFAULT_DEBOUNCE_MS = 30


@dataclass(frozen=True, slots=True)
class ModelChange:
    """One reload: the new model, or the problems that kept it from loading.

    ``seen_at`` is the monotonic time the change was noticed, for reload latency.
    """

    model: MeshModel | None
    problems: tuple[Problem, ...]
    seen_at: float


def _yaml_under(root: Path) -> Callable[[watchfiles.Change, str], bool]:
    root = root.resolve()

    def accept(change: watchfiles.Change, path: str) -> bool:
        p = Path(path).resolve()
        if p.suffix not in (".yaml", ".yml"):
            return False
        if root.is_dir():
            return root in p.parents
        return p == root

    return accept


async def watch_model(
    path: str | Path,
    *,
    loader: ConfigLoader | None = None,
    stop_event: asyncio.Event | None = None,
    debounce_ms: int = DEFAULT_DEBOUNCE_MS,
) -> AsyncIterator[ModelChange]:
    """Yield a :class:`ModelChange` after every change under ``path``.

    ``loader`` (pass the one that loaded the initial model) re-parses only the files
    that changed, so a reload takes milliseconds and runs on the loop itself.
    """
    target = Path(path)
    loader = loader or ConfigLoader(target)
    directory = target if target.is_dir() else target.parent
    async for _changes in watchfiles.awatch(
        directory,
        watch_filter=_yaml_under(target),
        debounce=debounce_ms,
        step=10,
        stop_event=stop_event,
        recursive=target.is_dir(),
    ):
        seen = time.monotonic()
        try:
            model = loader.load()  # incremental: only changed files (see apply)
        except ConfigError as err:
            for problem in err.problems:
                log.error("config rejected, still serving the previous one: %s", problem)
            yield ModelChange(None, err.problems, seen)
        else:
            yield ModelChange(model, (), seen)
