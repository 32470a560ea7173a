"""Hot reload: watch the config file and apply changes without a restart.

The file's *directory* is watched, not the file: editors and Kubernetes ConfigMaps replace files
by rename, which a watch on the old inode would miss. Any change there re-reads the file and a
content hash skips no-op events. A file that fails to parse or validate is logged and recorded
as rejected; the running config keeps serving. The files the config names (``policies_file``,
``pricing_overrides_file``) are hashed with it, so editing only one of them is a reload too
(seen by the once-a-second check when it lives in another directory). Writing the new file to
a temporary name and renaming it over the old one avoids the proxy ever reading a half-written
file.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from apikeyrouter.infrastructure.observability.logger import get_logger
from apikeyrouter.utils.exceptions import ApiKeyRouterError
from apikeyrouter_proxy.config.files import config_digest
from apikeyrouter_proxy.config.loader import load_config_text
from apikeyrouter_proxy.config.yaml_source import ConfigError
from apikeyrouter_proxy.services.runtime import ProxyRuntime
from watchfiles import awatch

_log = get_logger("apikeyrouter.proxy.config")


class ConfigWatcher:
    def __init__(
        self,
        runtime: ProxyRuntime,
        path: Path,
        *,
        debounce_ms: int = 200,
        step_ms: int = 30,
        recheck_ms: int = 1000,
    ) -> None:
        self._runtime = runtime
        self._path = path
        self._debounce = debounce_ms
        self._step = step_ms
        self._recheck_ms = recheck_ms
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._last_hash = self._hash_now()

    def _hash_now(self) -> bytes | None:
        try:
            return config_digest(self._path, self._path.read_bytes())
        except OSError:
            return None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="config-watcher")

    async def _run(self) -> None:
        directory = self._path.resolve().parent
        try:
            async for _ in awatch(
                directory,
                debounce=self._debounce,
                step=self._step,
                stop_event=self._stop,
                recursive=False,
                # Also wake up every second with no event: a change made before the OS watch
                # was in place (or lost by a network filesystem) is still seen, by its hash.
                rust_timeout=self._recheck_ms,
                yield_on_timeout=True,
            ):
                await self.reload()
        except Exception as exc:  # the watcher dying must not take the proxy down
            _log.error("config_watch_failed", error=type(exc).__name__, detail=str(exc))

    def _read(self) -> tuple[bytes, bytes]:
        """The file and the digest of it and of the files it names (policies, prices):
        editing any of them is a reload. Blocking file reads: run in a worker thread."""
        data = self._path.read_bytes()
        return data, config_digest(self._path, data)

    async def reload(self) -> bool:
        """Re-read and apply the file if its content changed. True if a new config applied."""
        try:
            data, digest = await asyncio.to_thread(self._read)
        except OSError as exc:
            self._runtime.reject(f"cannot read {self._path}: {exc.strerror}")
            return False
        if digest == self._last_hash:
            return False
        self._last_hash = digest
        try:
            # Parsing and validating a config of ten thousand keys takes about a second: off
            # the event loop, so requests keep being served meanwhile.
            text = data.decode("utf-8", errors="replace")
            config = await asyncio.to_thread(load_config_text, text, str(self._path))
        except ConfigError as exc:
            self._runtime.reject(exc.describe())
            return False
        try:
            await self._runtime.apply(config)
        except ApiKeyRouterError as exc:
            self._runtime.reject(f"{self._path}: {exc.message}")
            return False
        except Exception as exc:
            _log.error("config_apply_failed", error_type=type(exc).__name__, exc_info=exc)
            self._runtime.reject(f"{self._path}: internal error while applying the config")
            return False
        return True

    async def stop(self) -> None:
        self._stop.set()
        task = self._task
        if task is not None:
            try:
                await asyncio.wait_for(task, timeout=5.0)
            except TimeoutError:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
