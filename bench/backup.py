"""Backup benchmark on a database of at least 1 GB: dbops logical backup and restore drill against raw pg_dump /
pg_restore of the same database in the same run.

Measures, for the local store and an S3 store (SeaweedFS on loopback, started and stopped here), in the custom
format and the parallel directory format (-j 2): wall time of the dbops backup ÷ raw ``pg_dump -Fc > file`` (target
≤ 1.15), of the drill ÷ raw ``pg_restore`` of that file into an empty database (target ≤ 1.2), peak RSS of the dbops
process doing each (target < 200 MB; each runs in a child process of its own and reports its ``ru_maxrss``), and the
compression ratio. The directory runs are also compared with raw ``pg_dump -Fd -j 2`` / ``pg_restore -j 2``. Each
dbops step runs right after the raw tool it is compared with, so a drift in the machine's load skews both alike.

Everything runs on a PostgreSQL started here (embedded build, free port, temporary directory) and stopped at the end,
also on failure. ``--reuse DIR`` keeps the seeded cluster in DIR between runs (built there on first use).
Prints JSON (``--out FILE`` also writes it).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PROJECT = Path(__file__).resolve().parent.parent
if str(PROJECT) not in sys.path:
    sys.path.insert(0, str(PROJECT))  # run from a checkout without the package installed

from dbops.backup.keys import MasterKey, generate_key  # noqa: E402
from dbops.backup.logical import logical_backup  # noqa: E402
from dbops.backup.store import LocalStore, S3Store, Store  # noqa: E402
from dbops.migrate import Migrator  # noqa: E402
from dbops.pg.binaries import find_program  # noqa: E402
from dbops.pg.connect import connection, drop_database, ensure_database, split_password, with_database  # noqa: E402
from dbops.pg.server import EmbeddedServer, free_port  # noqa: E402
from dbops.programs import run_command  # noqa: E402
from dbops.restore.drill import drill  # noqa: E402
from dbops.s3server import start_s3_server  # noqa: E402
from dbops.seed import seed  # noqa: E402

DATABASE = "bench_backup"
SERVER_SETTINGS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
MIN_DATABASE_BYTES = 1 << 30
TIMEOUT = 4 * 3600.0
TARGETS = {"backup_vs_pg_dump": 1.15, "drill_vs_pg_restore": 1.2, "peak_rss_mb": 200}


# ---- the child process: one dbops step, reporting its own peak RSS -----------------------------------------------
def open_store(spec: dict[str, Any]) -> Store:
    if spec["kind"] == "local":
        return LocalStore(Path(spec["root"]))
    return S3Store(spec["bucket"], spec["prefix"], endpoint_url=spec["endpoint"])


def child(step: str, spec: dict[str, Any]) -> None:
    key = MasterKey.from_env()
    store = open_store(spec["store"])
    began = time.monotonic()
    if step == "backup":
        manifest = logical_backup(spec["url"], store, key, jobs=spec.get("jobs"))
        out: dict[str, Any] = {"id": manifest["id"], "raw_bytes": manifest["raw_bytes"],
                               "stored_bytes": manifest["stored_bytes"], "objects": len(manifest["objects"])}
    else:
        result = drill(spec["url"], store, key, backup_id=spec["backup_id"])
        out = {"phases": result.phases, "data_matches": result.data_matches, "problems": result.problems[:5],
               "tables": result.tables_checked, "rows": result.rows_checked, "indexes": result.indexes_checked}
    out["seconds"] = time.monotonic() - began
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    print(json.dumps(out))


def run_child(step: str, spec: dict[str, Any], key_b64: str) -> dict[str, Any]:
    began = time.monotonic()
    proc = subprocess.run([sys.executable, __file__, "--child", step, json.dumps(spec)],  # noqa: S603
                          env={**os.environ, "DBOPS_BACKUP_KEY": key_b64}, capture_output=True, text=True,
                          timeout=TIMEOUT, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"dbops {step} failed: {proc.stderr.strip()[-2000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["process_seconds"] = time.monotonic() - began
    return out


# ---- raw PostgreSQL tools, the baseline ----------------------------------------------------------------------------
def raw_dump(url: str, work: Path, jobs: int | None) -> tuple[float, Path, int]:
    """``pg_dump -Fc > file`` (or ``pg_dump -Fd -j N``): seconds, the dump, its size."""
    bare, password = split_password(url)
    dump = work / ("raw.dir" if jobs else "raw.pgc")
    shutil.rmtree(dump) if dump.is_dir() else dump.unlink(missing_ok=True)
    began = time.monotonic()
    if jobs:
        run_command([find_program("pg_dump"), "-Fd", f"--jobs={jobs}", "--no-password", f"--dbname={bare}",
                     f"--file={dump}"], password=password, timeout=TIMEOUT)
    else:
        with open(dump, "wb") as out:
            subprocess.run([str(find_program("pg_dump")), "-Fc", "--no-password", f"--dbname={bare}"],  # noqa: S603
                           stdout=out, stderr=subprocess.PIPE, env={**os.environ, "PGPASSWORD": password or ""},
                           check=True, timeout=TIMEOUT)
    seconds = time.monotonic() - began
    size = sum(p.stat().st_size for p in dump.iterdir()) if jobs else dump.stat().st_size
    return seconds, dump, size


def raw_restore(server_url: str, dump: Path, jobs: int | None) -> float:
    """``pg_restore`` of a raw dump into an empty database (one transaction, or ``--jobs``), timed, then dropped."""
    target = "bench_raw_restore"
    drop_database(server_url, target)
    ensure_database(server_url, target)
    target_bare, password = split_password(with_database(server_url, target))
    mode = [f"--jobs={jobs}"] if jobs else ["--single-transaction"]
    began = time.monotonic()
    run_command([find_program("pg_restore"), *mode, "--exit-on-error", "--no-password", f"--dbname={target_bare}",
                 str(dump)], password=password, timeout=TIMEOUT)
    seconds = time.monotonic() - began
    drop_database(server_url, target)
    return seconds


# ---- the seeded database -----------------------------------------------------------------------------------------
def prepare_database(server: EmbeddedServer, scale: float) -> dict[str, Any]:
    """Migrate and seed ``DATABASE`` unless a previous run (``--reuse``) left it seeded; return its size."""
    server_url = server.url("postgres")
    url = with_database(server_url, DATABASE)
    ensure_database(server_url, DATABASE)
    with connection(url) as conn:
        seeded = conn.execute("SELECT to_regclass('app.tenants') IS NOT NULL").fetchone()[0]  # type: ignore[index]
        if seeded:
            seeded = conn.execute("SELECT EXISTS (SELECT 1 FROM app.tenants)").fetchone()[0]  # type: ignore[index]
    info: dict[str, Any] = {"reused": bool(seeded)}
    if not seeded:
        Migrator(url, PROJECT / "sql" / "migrations").apply()
        began = time.monotonic()
        seed(url, scale)
        with connection(url) as conn:
            conn.execute("VACUUM ANALYZE")
        info["seed_seconds"] = round(time.monotonic() - began, 1)
    with connection(url) as conn:
        size = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]  # type: ignore[index]
        orders = conn.execute("SELECT count(*) FROM app.orders").fetchone()[0]  # type: ignore[index]
    info.update(database_bytes=size, database_gib=round(size / 2**30, 3), orders=orders)
    return info


def measure(server_url: str, url: str, work: Path, store_spec: dict[str, Any], key_b64: str,
            jobs: int | None) -> dict[str, Any]:
    """One dbops backup and drill, each next to the raw tool it is compared with (the machine's load drifts)."""
    raw: dict[str, Any] = {}
    seconds, dump, size = raw_dump(url, work, None)
    raw.update(pg_dump_seconds=round(seconds, 2), pg_dump_fc_bytes=size)
    if jobs:
        seconds, dump_dir, size = raw_dump(url, work, jobs)
        raw.update(pg_dump_directory_seconds=round(seconds, 2), pg_dump_directory_bytes=size)
    backup = run_child("backup", {"url": url, "store": store_spec, "jobs": jobs}, key_b64)
    raw["pg_restore_seconds"] = round(raw_restore(server_url, dump, None), 2)
    if jobs:
        raw["pg_restore_jobs_seconds"] = round(raw_restore(server_url, dump_dir, jobs), 2)
    drilled = run_child("drill", {"url": server_url, "store": store_spec, "backup_id": backup["id"]}, key_b64)
    out: dict[str, Any] = {
        "store": store_spec["kind"],
        "format": f"directory -j {jobs}" if jobs else "custom",
        "objects": backup["objects"],
        "raw": raw,
        "backup_seconds": round(backup["seconds"], 2),
        "backup_vs_pg_dump": round(backup["seconds"] / raw["pg_dump_seconds"], 3),
        "drill_seconds": round(drilled["seconds"], 2),
        "drill_phases": drilled["phases"],
        "drill_vs_pg_restore": round(drilled["seconds"] / raw["pg_restore_seconds"], 3),
        "data_matches": drilled["data_matches"],
        "tables_checked": drilled["tables"],
        "rows_checked": drilled["rows"],
        "indexes_checked": drilled["indexes"],
        "peak_rss_mb_backup": round(backup["peak_rss_mb"], 1),
        "peak_rss_mb_drill": round(drilled["peak_rss_mb"], 1),
        "process_seconds_backup": round(backup["process_seconds"], 2),
        "process_seconds_drill": round(drilled["process_seconds"], 2),
        "raw_bytes": backup["raw_bytes"],
        "stored_bytes": backup["stored_bytes"],
        "compression_ratio": round(backup["raw_bytes"] / backup["stored_bytes"], 2),
        "pg_dump_fc_bytes_per_stored_byte": round(raw["pg_dump_fc_bytes"] / backup["stored_bytes"], 3),
    }
    if jobs:
        out["backup_vs_pg_dump_directory"] = round(backup["seconds"] / raw["pg_dump_directory_seconds"], 3)
        out["drill_vs_pg_restore_jobs"] = round(drilled["seconds"] / raw["pg_restore_jobs_seconds"], 3)
    if drilled["problems"]:
        out["problems"] = drilled["problems"]
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        child(argv[1], json.loads(argv[2]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=14.0, help="seed scale (14 ≈ 1.1 GB, 1.4 million orders)")
    parser.add_argument("--reuse", type=Path, metavar="DIR",
                        help="keep the seeded cluster in DIR and reuse it next time (default: a temporary one)")
    parser.add_argument("--jobs", type=int, default=2, help="workers of the directory-format runs")
    parser.add_argument("--no-s3", action="store_true", help="skip the S3 store")
    parser.add_argument("--allow-small", action="store_true", help="accept a database under 1 GiB (quick tries)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    home = args.reuse.absolute() if args.reuse else Path(tempfile.mkdtemp(prefix="dbops-bench-backup-"))
    work = Path(tempfile.mkdtemp(prefix="dbops-bench-work-"))
    server = EmbeddedServer(home, free_port(), None, SERVER_SETTINGS)
    seaweed = None
    doc: dict[str, Any] = {"benchmark": "dbops logical backup + restore drill vs raw pg_dump / pg_restore",
                           "machine": {"cpus": os.cpu_count()}, "scale": args.scale}
    try:
        server.start()
        server_url = server.url("postgres")
        url = with_database(server_url, DATABASE)
        doc["database"] = prepare_database(server, args.scale)
        if doc["database"]["database_bytes"] < MIN_DATABASE_BYTES and not args.allow_small:
            raise SystemExit(f"database is {doc['database']['database_bytes']} bytes, under 1 GiB: raise --scale")
        key_b64 = generate_key()
        stores: list[dict[str, Any]] = [{"kind": "local", "root": str(work / "store")}]
        if not args.no_s3:
            access_key, secret_key = "dbops-bench", secrets.token_hex(16)
            # the measuring child processes reach the store through boto3's usual credential chain
            os.environ.update(AWS_ACCESS_KEY_ID=access_key, AWS_SECRET_ACCESS_KEY=secret_key)
            seaweed = start_s3_server(work / "s3", access_key=access_key, secret_key=secret_key)
            seaweed.client().create_bucket(Bucket="bench")
            stores.append({"kind": "s3", "bucket": "bench", "prefix": "b", "endpoint": seaweed.endpoint})
        doc["runs"] = [measure(server_url, url, work, spec, key_b64, jobs)
                       for spec in stores for jobs in (None, args.jobs)]
    finally:
        if seaweed is not None:
            seaweed.stop()
            shutil.rmtree(seaweed.home, ignore_errors=True)
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
        if not args.reuse:
            shutil.rmtree(home, ignore_errors=True)
    doc["targets"] = TARGETS
    doc["met"] = {
        "backup_vs_pg_dump": all(r["backup_vs_pg_dump"] <= TARGETS["backup_vs_pg_dump"] for r in doc["runs"]),
        "drill_vs_pg_restore": all(r["drill_vs_pg_restore"] <= TARGETS["drill_vs_pg_restore"] for r in doc["runs"]),
        "peak_rss_mb": all(max(r["peak_rss_mb_backup"], r["peak_rss_mb_drill"]) < TARGETS["peak_rss_mb"]
                           for r in doc["runs"]),
        "data_matches": all(r["data_matches"] for r in doc["runs"]),
    }
    text = json.dumps(doc, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
