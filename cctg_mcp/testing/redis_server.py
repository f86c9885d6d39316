"""A real ``redis-server`` on a loopback port for the Redis coordination tests.

``scripts/test`` installs the Debian package when it is missing; without it these tests fail
loudly (never skip silently, never a fake).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def redis_server(
    workdir: Path, *, password: str | None = None, port: int | None = None, tls: tuple[Path, Path] | None = None
) -> Iterator[str]:
    """Start ``redis-server`` on 127.0.0.1 (no persistence; a free port unless given) and yield its URL.

    ``tls=(certificate, key)`` (PEM files): TLS only on that port (no plain port, client
    certificates not asked for), and the URL is ``rediss://``."""
    binary = shutil.which("redis-server")
    if not binary:
        raise RuntimeError("redis-server is not installed: scripts/test installs it (apt-get install redis-server)")
    port = port or free_port()
    listen = ["--port", str(port)]
    if tls is not None:
        cert, key = tls
        listen = ["--port", "0", "--tls-port", str(port), "--tls-cert-file", str(cert), "--tls-key-file", str(key)]
        listen += ["--tls-auth-clients", "no"]
    args = [
        binary,
        *listen,
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(workdir),
        "--daemonize",
        "no",
        "--protected-mode",
        "yes",
    ]
    if password:
        args += ["--requirepass", password]
    with subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as proc:
        try:
            deadline = time.monotonic() + 10
            while True:
                with socket.socket() as s:
                    if s.connect_ex(("127.0.0.1", port)) == 0:
                        break
                if proc.poll() is not None:
                    raise RuntimeError("redis-server exited at start")
                if time.monotonic() >= deadline:
                    raise RuntimeError("redis-server did not listen within 10 s")
                time.sleep(0.02)
            auth = f":{password}@" if password else ""
            yield f"{'rediss' if tls else 'redis'}://{auth}127.0.0.1:{port}/0"
        finally:
            proc.terminate()
            proc.wait(timeout=10)
