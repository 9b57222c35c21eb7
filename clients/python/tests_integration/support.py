"""What the integration tests share: the environment PythonClientTests.swift passes (the address of the chatd it
started, the test CA, tokens per role, the learners) and `Instance`, a chatd of the tests' own on the same database
(started from CHATD_TEST_CHATD_ARGV on a port they choose, so that it can be restarted on the same address)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import tempfile
import time
from typing import Any

from chatd_client import Client, SyncClient

CA = os.environ.get("CHATD_TEST_CA", "")
LEARNER = os.environ.get("CHATD_TEST_LEARNER", "")
#: A learner of the same tenant no other test uses (erased by one).
SECOND_LEARNER = os.environ.get("CHATD_TEST_SECOND_LEARNER", "")
TOKENS = {
    "tenant_admin": os.environ.get("CHATD_TEST_TOKEN", ""),
    "privacy_officer": os.environ.get("CHATD_TEST_OFFICER_TOKEN", ""),
    "service": os.environ.get("CHATD_TEST_SERVICE_TOKEN", ""),
}


def address() -> tuple[str, int]:
    host, port = os.environ["CHATD_TEST_ADDRESS"].rsplit(":", 1)
    return host, int(port)


def client(role: str = "tenant_admin", port: int | None = None, **options: Any) -> Client:
    """A client of the shared chatd (or of the instance on `port`) with `role`'s token."""
    host, shared = address()
    return Client(host, port or shared, ca=CA, token=TOKENS[role], **options)


def sync_client(role: str = "tenant_admin", **options: Any) -> SyncClient:
    host, port = address()
    return SyncClient(host, port, ca=CA, token=TOKENS[role], **options)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Instance:
    """A chatd process of the test's own: `Instance(["--rate-per-user", "20"])`; `restart()` starts it again on the
    same port; `stop()` ends it with SIGTERM (a drain) or `kill()` with SIGKILL."""

    def __init__(self, arguments: list[str] | None = None, port: int | None = None) -> None:
        self.arguments = arguments or []
        self.port = port or free_port()
        self.log = tempfile.NamedTemporaryFile(prefix="chatd-", suffix=".log", delete=False)
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        argv = json.loads(os.environ["CHATD_TEST_CHATD_ARGV"])
        argv += ["--listen", f"127.0.0.1:{self.port}", "--admin-listen", "127.0.0.1:0", *self.arguments]
        # chatd refuses CHATD_* variables it does not know: the tests' own stay out of its environment.
        environment = {k: v for k, v in os.environ.items() if not k.startswith("CHATD_")}
        deadline = time.monotonic() + 30
        while True:
            self.log.truncate(0)
            self.process = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, env=environment)
            while time.monotonic() < deadline and self.process.poll() is None:
                try:
                    socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                    return
                except OSError:
                    time.sleep(0.05)
            if time.monotonic() >= deadline:
                self.kill()
                raise RuntimeError(f"chatd did not listen on {self.port}: {self.output()}")
            # It exited: the port may still be held by the instance it replaces, which is draining.
            if "in use" not in self.output().lower():
                raise RuntimeError(f"chatd exited: {self.output()}")
            time.sleep(0.2)

    def output(self) -> str:
        with open(self.log.name, encoding="utf-8", errors="replace") as log:
            return log.read()[-4000:]

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM (chatd drains), then waits for the exit; its status."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def close(self) -> None:
        self.kill()
        os.unlink(self.log.name)

    def __enter__(self) -> Instance:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
