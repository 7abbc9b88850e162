"""SQLite statement benchmark: the CPU each statement of the embedded default costs through kubecrawl's engine,
next to the same statements on a bare ``sqlite3`` connection measured in the same run.

The embedded crawl's frontier is small SQLite transactions on the event loop's thread (docs/crawls.md, goal 1);
what the engine adds around ``sqlite3`` is paid on every one. Each side runs in its own process, on a file of its
own with the PRAGMAs ``store/sqlite_engine.py`` sets, ``--transactions`` transactions of four statements (an
insert, two primary-key reads, an update), five times; the figure is the best of the five (CPU time of the
process, per statement, BEGIN and COMMIT included):

    peer      ``sqlite3`` itself, the same statements and transactions, no SQLAlchemy.
    engine    ``store/database.py::create_engine`` on ``sqlite:///FILE`` (what ``kubecrawl crawl`` opens),
              SQLAlchemy Core statements, ``async with engine.begin()`` per transaction.

``--baseline REF`` runs the engine also from a git commit's sources (``git archive`` into a temporary folder, put
first on ``PYTHONPATH``, same interpreter and dependencies), in turn with the others. ``--runs`` alternates the
processes that many times; the medians are printed with the load average at the start and at the end.

    .venv/bin/python bench/sqlite_statements.py [--runs 5] [--transactions 500] [--baseline main]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REPEATS = 5  # per process: the best of five passes drops the first pass's warm-up and the machine's worst moments
STATEMENTS = 4  # per transaction


def peer(path: Path, transactions: int) -> float:
    conn = sqlite3.connect(path, isolation_level=None)
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=5000", "foreign_keys=ON"):
        conn.execute(f"PRAGMA {pragma}")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    best = float("inf")
    for repeat in range(REPEATS):
        started = time.process_time()
        for i in range(transactions):
            row = repeat * transactions + i + 1
            conn.execute("BEGIN")
            conn.execute("INSERT INTO t (v) VALUES (?)", ("x",))
            conn.execute("SELECT v FROM t WHERE id = ?", (row,)).fetchone()
            conn.execute("SELECT v FROM t WHERE id = ?", (1,)).fetchone()
            conn.execute("UPDATE t SET v = 'y' WHERE id = ?", (row,))
            conn.execute("COMMIT")
        best = min(best, time.process_time() - started)
    conn.close()
    return best


async def engine(path: Path, transactions: int) -> float:
    from sqlalchemy import text

    from kubecrawl.store.database import create_engine

    db = create_engine(f"sqlite:///{path}")
    async with db.begin() as conn:
        await conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"))
    insert = text("INSERT INTO t (v) VALUES (:v)")
    read = text("SELECT v FROM t WHERE id = :id")
    update = text("UPDATE t SET v = 'y' WHERE id = :id")
    best = float("inf")
    for repeat in range(REPEATS):
        started = time.process_time()
        for i in range(transactions):
            row = repeat * transactions + i + 1
            async with db.begin() as conn:
                await conn.execute(insert, {"v": "x"})
                (await conn.execute(read, {"id": row})).first()
                (await conn.execute(read, {"id": 1})).first()
                await conn.execute(update, {"id": row})
        best = min(best, time.process_time() - started)
    await db.dispose()
    return best


def child(side: str, transactions: int) -> None:
    with tempfile.TemporaryDirectory(prefix="kubecrawl-sqlitebench-") as work:
        path = Path(work) / "bench.db"
        seconds = peer(path, transactions) if side == "peer" else asyncio.run(engine(path, transactions))
    print(json.dumps({"us_per_statement": seconds / (transactions * STATEMENTS) * 1e6}))


def measure(side: str, transactions: int, pythonpath: Path | None) -> float:
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(pythonpath), env.get("PYTHONPATH", "")]))
    out = subprocess.run(
        [sys.executable, __file__, "--child", side, "--transactions", str(transactions)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=600,
    )
    return float(json.loads(out.stdout.splitlines()[-1])["us_per_statement"])


def baseline_sources(ref: str, work: Path) -> Path:
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "src"], check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(work)], input=archive.stdout, check=True)
    return work / "src"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="processes of each side, alternated; figures are medians")
    parser.add_argument("--transactions", type=int, default=500, help="transactions per pass")
    parser.add_argument("--baseline", metavar="REF", help="also run the engine from this git commit's sources")
    parser.add_argument("--child", choices=["peer", "engine"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.transactions)
        return
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="kubecrawl-sqlitebench-src-") as work:
        sides: dict[str, tuple[str, Path | None]] = {"peer": ("peer", None), "engine": ("engine", None)}
        if args.baseline:
            sides[f"engine@{args.baseline}"] = ("engine", baseline_sources(args.baseline, Path(work)))
        figures: dict[str, list[float]] = {label: [] for label in sides}
        for run in range(args.runs):
            print(f"run {run + 1} of {args.runs} …", flush=True)
            for label, (side, pythonpath) in sides.items():
                figures[label].append(measure(side, args.transactions, pythonpath))
    load_end = os.getloadavg()
    print(f"\nload average {' '.join(f'{x:.2f}' for x in load_start)} at the start, ", end="")
    print(f"{' '.join(f'{x:.2f}' for x in load_end)} at the end; median of {args.runs} processes each")
    floor = statistics.median(figures["peer"])
    print(f"{'side':<16} {'CPU µs/statement':>17} {'× peer':>7} {'range':>14}")
    for label, values in figures.items():
        median = statistics.median(values)
        print(f"{label:<16} {median:>17.1f} {median / floor:>7.2f} {min(values):>6.1f}-{max(values):.1f}")


if __name__ == "__main__":
    main()
