"""Backup benchmark: dbops logical backup and restore drill against raw pg_dump -Fc / pg_restore, same run.

Prints JSON: wall times and ratios (targets: backup ≤ 1.15× pg_dump, drill ≤ 1.2× pg_restore), peak RSS of this
process during the dbops steps (target < 200 MB), compression ratio; for the local store and, with --s3, a SeaweedFS
S3 store started on loopback. Database size is set by --scale (default 10 ≈ 1 GB+).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from dbops.backup.keys import MasterKey, generate_key
from dbops.backup.logical import logical_backup
from dbops.backup.store import LocalStore, S3Store, Store
from dbops.migrate import Migrator
from dbops.pg.commands import find_program, run_command
from dbops.pg.connect import connection, drop_database, ensure_database, split_password, with_database
from dbops.pg.server import EmbeddedServer, free_port
from dbops.restore import drill
from dbops.seed import seed

PROJECT = Path(__file__).resolve().parent.parent
SERVER_SETTINGS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


class PeakRss:
    """Samples this process's RSS every 50 ms while active."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        proc = psutil.Process()
        while not self._stop.is_set():
            self.peak = max(self.peak, proc.memory_info().rss)
            time.sleep(0.05)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def raw_dump_restore(server_url: str, url: str, work: Path) -> dict[str, float]:
    bare, password = split_password(url)
    dump = work / "raw.pgc"
    began = time.monotonic()
    run_command([find_program("pg_dump"), "-Fc", "--no-password", f"--dbname={bare}", f"--file={dump}"],
                password=password, timeout=7200)
    dump_s = time.monotonic() - began
    ensure_database(server_url, "bench_raw_restore")
    target_bare, _ = split_password(with_database(server_url, "bench_raw_restore"))
    began = time.monotonic()
    run_command([find_program("pg_restore"), "--single-transaction", "--exit-on-error", "--no-password",
                 f"--dbname={target_bare}", str(dump)], password=password, timeout=7200)
    restore_s = time.monotonic() - began
    drop_database(server_url, "bench_raw_restore")
    size = dump.stat().st_size
    dump.unlink()
    return {"pg_dump_seconds": round(dump_s, 2), "pg_restore_seconds": round(restore_s, 2), "pg_dump_fc_bytes": size}


def measure_store(server_url: str, url: str, store: Store, key: MasterKey, raw: dict[str, float]) -> dict[str, Any]:
    with PeakRss() as rss_backup:
        began = time.monotonic()
        manifest = logical_backup(url, store, key)
        backup_s = time.monotonic() - began
    with PeakRss() as rss_drill:
        began = time.monotonic()
        result = drill(server_url, store, key)
        drill_s = time.monotonic() - began
    return {
        "store": store.describe(),
        "backup_seconds": round(backup_s, 2),
        "backup_vs_pg_dump": round(backup_s / raw["pg_dump_seconds"], 3),
        "drill_seconds": round(drill_s, 2),
        "drill_phases": result.phases,
        "drill_vs_pg_restore": round(drill_s / raw["pg_restore_seconds"], 3),
        "drill_restore_phase_vs_pg_restore": round(
            (result.phases["restore"] + result.phases["decrypt_decompress"]) / raw["pg_restore_seconds"], 3),
        "data_matches": result.data_matches,
        "peak_rss_mb_backup": round(rss_backup.peak / 2**20, 1),
        "peak_rss_mb_drill": round(rss_drill.peak / 2**20, 1),
        "raw_bytes": manifest["raw_bytes"],
        "stored_bytes": manifest["stored_bytes"],
        "compression_ratio": round(manifest["raw_bytes"] / manifest["stored_bytes"], 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", type=float, default=10.0, help="seed scale (10 gives a database of 1 GB or more)")
    parser.add_argument("--s3", action="store_true", help="also measure an S3 store (SeaweedFS on loopback)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    home = Path(tempfile.mkdtemp(prefix="dbops-bench-backup-"))
    server = EmbeddedServer(home, free_port(), None, SERVER_SETTINGS)
    server.start()
    seaweed = None
    try:
        server_url = server.url("postgres")
        ensure_database(server_url, "bench_backup")
        url = with_database(server_url, "bench_backup")
        Migrator(url, PROJECT / "sql" / "migrations").apply()
        began = time.monotonic()
        seed(url, args.scale)
        with connection(url) as conn:
            conn.execute("VACUUM ANALYZE")
            db_bytes = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]  # type: ignore[index]
        seed_s = time.monotonic() - began
        key = MasterKey.from_env({"DBOPS_BACKUP_KEY": generate_key()})
        raw = raw_dump_restore(server_url, url, home)
        stores: list[Store] = [LocalStore(home / "store")]
        if args.s3:
            from dbops_tests.backup.conftest import ACCESS_KEY, SECRET_KEY, start_seaweed

            os.environ.update(AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY)
            seaweed = start_seaweed()
            seaweed.client().create_bucket(Bucket="bench")
            stores.append(S3Store("bench", "b", endpoint_url=seaweed.endpoint))
        results = [measure_store(server_url, url, s, key, raw) for s in stores]
    finally:
        if seaweed is not None:
            seaweed.stop()
        server.stop()
        shutil.rmtree(home, ignore_errors=True)
    doc = {"benchmark": "dbops logical backup + restore drill vs raw pg_dump -Fc / pg_restore",
           "machine": {"cpus": os.cpu_count()}, "scale": args.scale, "database_bytes": db_bytes,
           "seed_seconds": round(seed_s, 1), "raw": raw, "stores": results,
           "targets": {"backup_vs_pg_dump": 1.15, "drill_vs_pg_restore": 1.2, "peak_rss_mb": 200}}
    text = json.dumps(doc, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
