"""The CCTelegram bridge as a process: find it, start it, watch it, stop it; probe its health.

``BridgeProcessManager`` mirrors the seed's bridge tools (REFERENCE.md §A 2.3):

- the executable is ``CC_TELEGRAM_BRIDGE_PATH`` or ``cctelegram-bridge`` on PATH; none found
  is a ``BridgeNotFoundError`` naming the variable to set;
- ``start`` spawns it in its own session (it outlives this server, like the seed's detached
  bridge), stdout/stderr appended to ``<data dir>/bridge.log``, its pid in
  ``<data dir>/bridge.pid``; then it waits (bounded) for ``/health`` to answer or the process to
  exit, so "started" means something. It is spawned with ``os.posix_spawn``, not ``Popen``: a
  ``Popen`` (or an asyncio subprocess transport, which kills its child when closed) cannot be
  let go while the child runs on, so it would reach the garbage collector still running. The
  manager reaps its own child (``waitpid``, never blocking) whenever it looks at it;
- ``stop`` sends SIGTERM, waits ``grace_s``, then SIGKILL; ``restart`` is stop, the
  resilience config's ``recovery.restartDelay``, start;
- ``check_process`` trusts the pid file only when that pid is alive, not a zombie, and (where
  ``/proc`` tells) runs the bridge executable: a stale pid file is removed, never signalled.

Waiting on the real process uses real time (anyio); the restart delay uses the injected clock.
The health probe is one short httpx GET (3 s timeout): 2xx healthy (or the ``status`` the body
reports), 429 degraded, anything else or no answer unhealthy. Errors never leave as httpx errors.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Literal

import anyio
import anyio.to_thread
import httpx
from pydantic import BaseModel, Field

from cctg_mcp.config import Settings
from cctg_mcp.resilience.clock import SYSTEM_CLOCK, Clock
from cctg_mcp.resilience.errors import ConfigurationError, redact

log = logging.getLogger(__name__)

BRIDGE_NAME = "cctelegram-bridge"
HealthState = Literal["healthy", "degraded", "unhealthy"]
_METRIC_KEYS = (
    "uptime_seconds",
    "events_processed",
    "telegram_messages_sent",
    "error_count",
    "memory_usage_mb",
    "cpu_usage_percent",
)


class BridgeNotFoundError(ConfigurationError):
    """Raised when no bridge executable is configured or found on PATH."""

    code = "BRIDGE_NOT_FOUND"


class BridgeHealth(BaseModel):
    """What the bridge's health endpoint answered."""

    status: HealthState
    detail: str
    http_status: int | None = None
    metrics: dict[str, float] = Field(default_factory=dict, description="What the bridge's /health reported.")


class ProcessCheck(BaseModel):
    """Whether the bridge process runs, and how it was found."""

    running: bool
    pid: int | None = None
    message: str
    started_here: bool = Field(default=False, description="Started by this server (else found by its pid file).")


class BridgeActionResult(BaseModel):
    """What a start, stop or restart of the bridge did. ``started_unverified``: the process runs
    but its /health did not answer healthy in time, so the start is not a success."""

    success: bool
    message: str
    pid: int | None = None
    action: Literal[
        "already_running", "started", "started_unverified", "failed", "stopped", "not_running", "killed", "restarted"
    ]


async def probe_bridge_health(
    url: str, *, timeout_s: float = 3.0, http_transport: httpx.AsyncBaseTransport | None = None
) -> BridgeHealth:
    """One GET of the bridge's health URL, mapped to healthy | degraded | unhealthy."""
    where = redact(url)
    try:
        async with httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s), transport=http_transport, follow_redirects=False
        ) as client:
            response = await client.get(url)
    except httpx.HTTPError as exc:
        return BridgeHealth(status="unhealthy", detail=f"{where}: {type(exc).__name__}: {redact(str(exc))}".strip())
    code = response.status_code
    metrics: dict[str, float] = {}
    reported: str | None = None
    with contextlib.suppress(ValueError):
        body = response.json()
        if isinstance(body, dict):
            status = body.get("status")
            reported = status.lower() if isinstance(status, str) else None
            nested = body.get("metrics")
            source = {**nested, **body} if isinstance(nested, dict) else body
            for key in _METRIC_KEYS:
                value = source.get(key)
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    metrics[key] = float(value)
    if 200 <= code < 300:
        state: HealthState = reported if reported in ("healthy", "degraded", "unhealthy") else "healthy"  # type: ignore[assignment]
        said = f", status {reported!r}" if reported else ""
        return BridgeHealth(status=state, detail=f"{where}: HTTP {code}{said}", http_status=code, metrics=metrics)
    if code == 429:
        return BridgeHealth(status="degraded", detail=f"{where}: HTTP 429 (rate limited)", http_status=code)
    return BridgeHealth(status="unhealthy", detail=f"{where}: HTTP {code}", http_status=code, metrics=metrics)


def _alive(pid: int) -> bool:
    """The pid exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, owned by someone else
    except OSError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    state = stat.rsplit(")", 1)[-1].split()
    return not (state and state[0] in ("Z", "X"))


def _runs(pid: int, names: Iterable[str]) -> bool:
    """Whether ``pid`` runs one of ``names`` (True when the system cannot tell)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return True
    wanted = {n.encode() for n in names}
    return any(Path(os.fsdecode(arg)).name.encode() in wanted for arg in argv[:3] if arg)


class BridgeProcessManager:
    """Finds, starts, watches and stops the CCTelegram bridge process."""

    def __init__(
        self,
        *,
        data_dir: Path,
        health_url: str,
        executable: Path | None = None,
        env_overrides: Mapping[str, str] | None = None,
        grace_s: float = 5.0,
        restart_delay_s: float = 2.0,
        start_timeout_s: float = 10.0,
        clock: Clock = SYSTEM_CLOCK,
        http_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.health_url = health_url
        self.configured_executable = executable
        self.env_overrides = dict(env_overrides or {})
        self.grace_s = grace_s
        self.restart_delay_s = restart_delay_s
        self.start_timeout_s = start_timeout_s
        self.clock = clock
        self.http_transport = http_transport
        self.pid_file = self.data_dir / "bridge.pid"
        self.log_file = self.data_dir / "bridge.log"
        #: The pid of the bridge this manager spawned and has not reaped yet.
        self._child: int | None = None
        self._lock = anyio.Lock()

    # ---- discovery ----------------------------------------------------------------------

    def find_executable(self) -> Path:
        exe = self.configured_executable
        if exe is not None:
            if exe.is_file() and os.access(exe, os.X_OK):
                return exe
            raise BridgeNotFoundError(
                f"CC_TELEGRAM_BRIDGE_PATH={exe} is not an executable file: point it to the CCTelegram bridge "
                f"binary ({BRIDGE_NAME}) or make it executable (chmod +x)."
            )
        found = shutil.which(BRIDGE_NAME)
        if found is None:
            raise BridgeNotFoundError(
                f"No CCTelegram bridge executable found: set CC_TELEGRAM_BRIDGE_PATH to the bridge binary, or put "
                f"{BRIDGE_NAME} on PATH. (Event files are still written to the events directory.)"
            )
        return Path(found)

    def executable_or_none(self) -> Path | None:
        try:
            return self.find_executable()
        except BridgeNotFoundError:
            return None

    def _names(self) -> set[str]:
        names = {BRIDGE_NAME}
        if self.configured_executable is not None:
            names.add(self.configured_executable.name)
        return names

    # ---- pid file -----------------------------------------------------------------------

    def _read_pid(self) -> int | None:
        try:
            text = self.pid_file.read_text().strip()
        except OSError:
            return None
        return int(text) if text.isdigit() and int(text) > 1 else None

    def _write_pid(self, pid: int) -> None:
        tmp = self.pid_file.with_name(f".{self.pid_file.name}.tmp")
        tmp.write_text(f"{pid}\n")
        os.replace(tmp, self.pid_file)

    def _clear_pid(self, pid: int | None = None) -> None:
        if pid is None or self._read_pid() in (pid, None):
            with contextlib.suppress(OSError):
                self.pid_file.unlink()

    # ---- state --------------------------------------------------------------------------

    def _reap(self, pid: int) -> tuple[bool, int | None]:
        """(exited, exit status) of our own child ``pid``, reaping it once it has exited; a pid
        that is not our unreaped child is reported as (False, None)."""
        if pid != self._child:
            return False, None
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:  # already reaped elsewhere: gone, status unknown
            self._child = None
            return True, None
        if done == 0:
            return False, None
        self._child = None
        return True, os.waitstatus_to_exitcode(status)

    def check_process(self) -> ProcessCheck:
        pid = self._child
        if pid is not None:
            exited, status = self._reap(pid)
            if not exited:
                return ProcessCheck(running=True, pid=pid, message="Bridge process is running", started_here=True)
            log.warning("the bridge (pid %s) exited with status %s", pid, status)
            self._clear_pid(pid)
        pid = self._read_pid()
        if pid is None:
            return ProcessCheck(running=False, message="Bridge process is not running")
        if _alive(pid) and _runs(pid, self._names()):
            return ProcessCheck(running=True, pid=pid, message="Bridge process is running")
        self._clear_pid(pid)
        return ProcessCheck(running=False, message=f"Bridge process is not running (stale pid file for {pid} removed)")

    async def health(self, timeout_s: float = 3.0) -> BridgeHealth:
        return await probe_bridge_health(self.health_url, timeout_s=timeout_s, http_transport=self.http_transport)

    # ---- actions ------------------------------------------------------------------------

    def _child_env(self) -> dict[str, str]:
        # The child inherits this process's environment (passed through, not read for
        # configuration), plus the directories and credentials this server resolved.
        return {**os.environ, **self.env_overrides}

    async def start(self) -> BridgeActionResult:
        async with self._lock:
            return await self._start()

    async def _start(self) -> BridgeActionResult:
        state = self.check_process()
        if state.running:
            return BridgeActionResult(
                success=True, message="Bridge is already running", pid=state.pid, action="already_running"
            )
        exe = self.find_executable()
        try:
            pid = await anyio.to_thread.run_sync(self._spawn, exe)
            self._child = pid
            self._write_pid(pid)
        except OSError as exc:
            return BridgeActionResult(
                success=False, message=f"Failed to start bridge: {redact(str(exc))}", action="failed"
            )
        log.info("started the bridge %s (pid %s)", exe, pid)
        return await self._await_started(pid)

    def _spawn(self, exe: Path) -> int:
        """Create the directories the bridge uses, then spawn it in its own session: stdin from
        /dev/null, stdout and stderr appended to its log file. Returns its pid."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        for key in ("CC_TELEGRAM_EVENTS_DIR", "CC_TELEGRAM_RESPONSES_DIR"):
            if self.env_overrides.get(key):
                Path(self.env_overrides[key]).mkdir(parents=True, exist_ok=True)
        log_fd = os.open(self.log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            # Our other descriptors are close-on-exec (PEP 446); only these three are passed on.
            return os.posix_spawn(
                str(exe),
                [str(exe)],
                self._child_env(),
                file_actions=[
                    (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                    (os.POSIX_SPAWN_DUP2, log_fd, 1),
                    (os.POSIX_SPAWN_DUP2, log_fd, 2),
                ],
                setsid=True,
            )
        finally:
            os.close(log_fd)

    async def _await_started(self, pid: int) -> BridgeActionResult:
        """Until /health answers healthy, the process exits, or ``start_timeout_s`` passes."""
        health: BridgeHealth | None = None
        exited, status = False, None
        with anyio.move_on_after(self.start_timeout_s):
            while True:
                exited, status = self._reap(pid)
                if exited:
                    break
                health = await self.health(timeout_s=1.0)
                if health.status == "healthy":
                    return BridgeActionResult(
                        success=True, message="Bridge started successfully", pid=pid, action="started"
                    )
                await anyio.sleep(0.05)  # waiting on a subprocess
        if exited:
            self._clear_pid(pid)
            return BridgeActionResult(
                success=False,
                action="failed",
                message=f"Bridge failed to start: it exited with status {status}. See {self.log_file}; "
                "the bridge needs TELEGRAM_BOT_TOKEN and TELEGRAM_ALLOWED_USERS in its environment.",
            )
        why = health.detail if health is not None else "no answer"
        return BridgeActionResult(
            success=False,
            pid=pid,
            action="started_unverified",
            message=f"Bridge process started (pid {pid}), but its health endpoint did not answer healthy "
            f"within {self.start_timeout_s:g}s ({why}): not verified. See {self.log_file}.",
        )

    async def stop(self) -> BridgeActionResult:
        async with self._lock:
            return await self._stop()

    async def _stop(self) -> BridgeActionResult:
        state = self.check_process()
        if not state.running or state.pid is None:
            return BridgeActionResult(success=True, message="Bridge is not running", action="not_running")
        pid = state.pid
        self._signal(pid, signal.SIGTERM)
        forced = not await self._wait_exit(pid, self.grace_s)
        if forced:
            log.warning("the bridge (pid %s) ignored SIGTERM for %.1fs: killing it", pid, self.grace_s)
            self._signal(pid, signal.SIGKILL)
            if not await self._wait_exit(pid, 5.0):
                return BridgeActionResult(
                    success=False,
                    pid=pid,
                    action="failed",
                    message=f"Failed to stop bridge: pid {pid} survived SIGKILL",
                )
        self._clear_pid(pid)
        if forced:
            return BridgeActionResult(
                success=True,
                pid=pid,
                action="killed",
                message=f"Bridge process (pid {pid}) did not stop within {self.grace_s:g}s of SIGTERM and was "
                "forcefully terminated (SIGKILL)",
            )
        return BridgeActionResult(
            success=True, pid=pid, action="stopped", message=f"Stopped bridge process (pid {pid})"
        )

    @staticmethod
    def _signal(pid: int, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)

    async def _wait_exit(self, pid: int, seconds: float) -> bool:
        """Whether ``pid`` is gone within ``seconds`` (reaped, when it is our own child)."""
        with anyio.move_on_after(seconds):
            # Our child is reaped here; another process's bridge has nothing to wait on but its pid.
            while not self._reap(pid)[0] and (pid == self._child or _alive(pid)):  # noqa: ASYNC110
                await anyio.sleep(0.05)  # waiting on a subprocess
            return True
        return False

    async def restart(self) -> BridgeActionResult:
        async with self._lock:
            stopped = await self._stop()
            if not stopped.success:
                return BridgeActionResult(
                    success=False, action="failed", pid=stopped.pid, message=f"Restart failed: {stopped.message}"
                )
            await self.clock.sleep(self.restart_delay_s)
            started = await self._start()
        if started.action == "started_unverified":  # running, but not known to work: say so
            return started.model_copy(update={"message": f"Restart unverified: {started.message}"})
        prefix = "Restart successful" if started.success else "Restart failed"
        return BridgeActionResult(
            success=started.success,
            message=f"{prefix}: {started.message}",
            pid=started.pid,
            action="restarted" if started.success else "failed",
        )

    async def ensure_running(self) -> BridgeActionResult:
        return await self.start()


def bridge_manager(settings: Settings, *, restart_delay_s: float, clock: Clock = SYSTEM_CLOCK) -> BridgeProcessManager:
    """The ``BridgeProcessManager`` for these settings (in any delivery mode): the bridge tools
    and the recovery ``restart`` strategy act through it. Building it touches nothing."""
    env = {
        "CC_TELEGRAM_EVENTS_DIR": str(settings.events_dir.absolute()),
        "CC_TELEGRAM_RESPONSES_DIR": str(settings.responses_dir.absolute()),
    }
    if settings.token:
        env["TELEGRAM_BOT_TOKEN"] = settings.token
    if settings.allowed_users:
        env["TELEGRAM_ALLOWED_USERS"] = ",".join(map(str, settings.allowed_users))
    return BridgeProcessManager(
        data_dir=settings.data_dir,
        health_url=settings.bridge_health_url,
        executable=settings.bridge_path,
        env_overrides=env,
        restart_delay_s=restart_delay_s,
        clock=clock,
    )
