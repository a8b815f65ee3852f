"""A real `dovecote serve` process for fault tests."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import time

from dovecote.net.client import BlockingClient


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def strace_can_run() -> bool:
    """strace is installed and may trace here (a container without CAP_SYS_PTRACE, or with ptrace
    forbidden by Yama or seccomp, cannot)."""
    strace = shutil.which("strace")
    return strace is not None and subprocess.run([strace, "-f", "-qq", "-o", "/dev/null", "true"], capture_output=True, check=False).returncode == 0


PACKAGE = (sys.executable, "-m", "dovecote")  # the installed package; the single-file build is another program


class ServeProcess:
    def __init__(
        self,
        data_dir,
        *extra_args: str,
        program: tuple[str, ...] = PACKAGE,
        env: dict[str, str] | None = None,
        tls=None,
        access_key: tuple[str, str] | None = None,
        preexec_fn=None,
    ) -> None:
        """env: the whole environment of the process (None: this one's). tls and access_key: how
        this test's clients connect (the broker's own TLS files and keys are among extra_args; by
        default the clients prove the first --access-key given there). preexec_fn: run in the
        child before it starts (a lower file-descriptor limit, say)."""
        self.preexec_fn = preexec_fn
        self.tls = tls
        if access_key is None and "--access-key" in extra_args:
            key_id, _, secret = extra_args[extra_args.index("--access-key") + 1].partition(":")
            access_key = (key_id, secret)
        self.access_key = access_key
        self.program = program
        self.env = env
        self.data_dir = str(data_dir)
        self.port = free_port()
        self.http_port = free_port()
        self.extra_args = extra_args
        self.process: subprocess.Popen | None = None

    def command(self) -> list[str]:
        return [
            *self.program, "serve", "--data-dir", self.data_dir,
            "--port", str(self.port), "--http-port", str(self.http_port), "--log-level", "WARNING",
            *self.extra_args,
        ]

    def start(self, timeout_s: float = 20) -> ServeProcess:
        self.process = subprocess.Popen(
            self.command(), stderr=subprocess.PIPE, text=True, env=self.env, preexec_fn=self.preexec_fn
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"dovecote serve exited {self.process.returncode}: {self.process.stderr.read()}")
            try:
                BlockingClient("127.0.0.1", self.port, timeout_s=1, tls=self.tls, access_key=self.access_key).close()
                return self
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("dovecote serve did not start")

    def client(self) -> BlockingClient:
        return BlockingClient("127.0.0.1", self.port, timeout_s=10, tls=self.tls, access_key=self.access_key)

    def kill9(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def terminate(self) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=30)
