"""A real Vitrine server per test module (or per test, with settings of its
own): the binary the repository builds (``VITRINE_BIN``, default
``target/debug/vitrine``) on port 0 with a fresh data directory."""

from __future__ import annotations

import os
import pathlib
import subprocess
import tempfile
import threading

import pytest

import vitrine

ROOT = pathlib.Path(__file__).resolve().parents[3]
FIXTURES = ROOT / "fixtures" / "models"
BINARY = os.environ.get("VITRINE_BIN", str(ROOT / "target" / "debug" / "vitrine"))


class Server:
    """``vitrine serve`` on a fresh data directory."""

    def __init__(self, settings: dict[str, str] | None = None, log_seed: bytes | None = None):
        self.dir = tempfile.TemporaryDirectory(prefix="vitrine-py-")
        data = pathlib.Path(self.dir.name) / "data"
        if log_seed is not None:
            # The log's key made up front, so a witness can be told it first.
            data.mkdir()
            (data / "log.key").write_text(log_seed.hex())
        command = [BINARY, "serve", "--listen", "127.0.0.1:0", "--data-dir", str(data)]
        for key, value in {"checkpoint_interval_ms": "100", **(settings or {})}.items():
            command += ["--set", f"{key}={value}"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("VITRINE_")}
        env["RUST_LOG"] = "warn"
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, env=env, text=True)
        for line in self.process.stdout:
            if line.startswith("vitrine listening on "):
                self.url = line.split("vitrine listening on ", 1)[1].strip()
                break
        else:
            raise RuntimeError("the server exited before listening")
        # Keep reading, so the server never blocks on a full pipe.
        threading.Thread(target=lambda: [None for _ in self.process.stdout], daemon=True).start()
        self.operator = vitrine.Client(self.url, (data / "operator.key").read_text().strip())

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)
        self.dir.cleanup()

    def account(self, name: str, deposit: int = 0) -> vitrine.Client:
        """A new account (with ``deposit`` minor units), as a client."""
        client = vitrine.Client.signup(name, self.url)
        if deposit:
            self.operator.deposit(name, deposit, f"deposit-{name}")
        return client


@pytest.fixture(scope="module")
def server():
    running = Server()
    yield running
    running.stop()


@pytest.fixture
def make_server():
    started = []

    def make(settings: dict[str, str], log_seed: bytes | None = None) -> Server:
        started.append(Server(settings, log_seed))
        return started[-1]

    yield make
    for running in started:
        running.stop()


@pytest.fixture(autouse=True)
def no_user_configuration(monkeypatch, tmp_path):
    """Tests never read the developer's own client configuration."""
    for name in ("VITRINE_URL", "VITRINE_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("VITRINE_CLIENT_CONFIG", str(tmp_path / "client.toml"))
