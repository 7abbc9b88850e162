"""Crawl cost against crawl size: the embedded crawl (``kubecrawl crawl``) of a 100,000-page site, tenth by tenth.

The site is ``crawl_vs_scrapy.py``'s generator with more pages (about 12 KB of HTML each, ~25 links per page,
page i links to page i+1, and the random links reach every page within a few links of the home page), served by nginx on loopback; the crawl runs as
``bench/crawl_vs_scrapy.py`` runs it (a fresh SQLite file, 16 in flight). Printed (issue 16, goal 3):

- pages/s for each tenth of the crawl (by pages settled, from each page's ``fetched_at`` in the crawl's database),
  with an ASCII plot, and the last tenth over the first against the 0.9 target: a cost that grows with the
  crawl (an index walked per batch, a memo that grows, a query that scans) shows as a falling curve;
- the crawl process's CPU per page in each tenth (its /proc CPU time, sampled): on a machine shared with other
  work the pages/s of a tenth follow the machine's load, its CPU per page much less;
- the crawl process's peak RSS (its ``ru_maxrss`` from ``wait4``) against 300 MB;
- the SQLite database's bytes (with its WAL) per page.

    .venv/bin/python bench/crawl_size.py              # 100,000 pages (about 1.2 GB of site in a temporary folder)
    .venv/bin/python bench/crawl_size.py --quick      # 10,000 pages
    .venv/bin/python bench/crawl_size.py --pages N

Wrap a run in ``flock /tmp/kubecrawl-bench.lock`` on a shared machine, and read the figures with its load
average (printed). Results go to ``bench/results/crawl-size-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from crawl_vs_scrapy import (
    CONCURRENCY,
    KUBECRAWL,
    crawl_seconds,
    generate_site,
    save_result,
    start_nginx,
    stop_site,
)

TENTHS = 10
FLATNESS_TARGET = 0.9
RSS_TARGET_MB = 300
PLOT_WIDTH = 50
# How often the crawl process's CPU time is read (/proc/PID/stat), for the CPU per page of each tenth.
CPU_SAMPLE_SECONDS = 0.25


def run_crawl(base_url: str, pages: int, db: Path, work: Path) -> dict[str, Any]:
    """``kubecrawl crawl`` in its own process; its peak RSS from ``wait4`` (that process only, not nginx)."""
    env = dict(os.environ, KUBECRAWL_ALLOW_PRIVATE_TARGETS="true")
    out_path, err_path = work / "crawl.json", work / "crawl.err"
    command = [
        str(KUBECRAWL),
        "crawl",
        base_url + "/",
        *("--max-pages", str(pages), "--max-depth", "50", "--concurrency", str(CONCURRENCY)),
        *("--db", str(db), "--json"),
    ]
    started = time.perf_counter()
    samples: list[tuple[float, float]] = []
    with out_path.open("wb") as out, err_path.open("wb") as err:
        proc = subprocess.Popen(command, stdout=out, stderr=err, env=env)
        sampler = threading.Thread(target=sample_cpu, args=(proc.pid, samples), daemon=True)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        sampler.join()
    if proc.returncode != 0:
        raise RuntimeError(f"kubecrawl crawl failed ({proc.returncode}):\n{err_path.read_text()[-3000:]}")
    crawl = json.loads(out_path.read_text())
    return {
        "crawl": crawl,
        "wall_seconds": time.perf_counter() - started,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "max_rss_mb": usage.ru_maxrss / 1024,  # KiB on Linux
        "cpu_samples": samples,
    }


def sample_cpu(pid: int, samples: list[tuple[float, float]]) -> None:
    """(wall clock, CPU seconds used) of the crawl process every ``CPU_SAMPLE_SECONDS`` until it exits: the CPU
    per page of each tenth does not depend on what else the machine runs, which pages/s does."""
    ticks = os.sysconf("SC_CLK_TCK")
    stat = Path(f"/proc/{pid}/stat")
    while True:
        try:
            raw = stat.read_text()
        except OSError:
            return
        fields = raw[raw.rindex(")") + 2 :].split()
        if fields[0] == "Z":  # exited, not yet reaped
            return
        samples.append((time.time(), (int(fields[11]) + int(fields[12])) / ticks))
        time.sleep(CPU_SAMPLE_SECONDS)


def cpu_at(samples: list[tuple[float, float]], when: float) -> float:
    """The process's CPU seconds at ``when``, interpolated between samples."""
    index = bisect.bisect_left(samples, (when, -1.0))
    if index == 0:
        return samples[0][1]
    if index >= len(samples):
        return samples[-1][1]
    (t0, c0), (t1, c1) = samples[index - 1], samples[index]
    return c0 + (c1 - c0) * (when - t0) / max(t1 - t0, 1e-9)


def tenths(db: Path, crawl_id: str, samples: list[tuple[float, float]]) -> list[dict[str, float]]:
    """Pages/s and CPU per page over each tenth of the crawl's settled pages, in the order they settled."""
    with sqlite3.connect(db) as conn:
        stamps = [
            datetime.fromisoformat(row[0]).timestamp()
            for row in conn.execute(
                "SELECT fetched_at FROM crawl_pages WHERE crawl_id = ? AND fetched_at IS NOT NULL ORDER BY fetched_at",
                (crawl_id,),
            )
        ]
    if len(stamps) < TENTHS * 2:
        raise RuntimeError(f"only {len(stamps)} settled pages in the database")
    curve: list[dict[str, float]] = []
    size = len(stamps) / TENTHS
    for index in range(TENTHS):
        first, last = round(index * size), round((index + 1) * size) - 1
        # A tenth runs from the last page of the tenth before it (or its own first page) to its own last page.
        begin = stamps[first - 1] if first > 0 else stamps[0]
        pages = last - first + 1 if first > 0 else last - first
        seconds = max(stamps[last] - begin, 1e-6)
        cpu_ms = 1000 * (cpu_at(samples, stamps[last]) - cpu_at(samples, begin)) / max(pages, 1)
        curve.append(
            {"tenth": index + 1, "pages": pages, "seconds": seconds, "rate": pages / seconds, "cpu_ms_per_page": cpu_ms}
        )
    return curve


def plot(curve: list[dict[str, float]]) -> str:
    top = max(point["rate"] for point in curve)
    lines = []
    for point in curve:
        bar = "#" * max(1, round(PLOT_WIDTH * point["rate"] / top))
        lines.append(f"  {point['tenth']:>4}  {point['rate']:>7.0f}  {point['cpu_ms_per_page']:>6.2f}  {bar}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pages", type=int, default=100_000)
    parser.add_argument("--quick", action="store_true", help="10,000 pages")
    parser.add_argument("--keep", action="store_true", help="keep the site and the database")
    parser.add_argument(
        "--json", metavar="PATH", help="write the figures here (default: bench/results/crawl-size-….json)"
    )
    args = parser.parse_args()
    pages = 10_000 if args.quick else args.pages

    from tests.support.servers import free_port

    work = Path(tempfile.mkdtemp(prefix="kubecrawl-sizebench-"))
    work.chmod(0o755)  # nginx's worker runs as an unprivileged user and must read the site
    site = work / "site"
    print(f"generating a {pages}-page site in {site} …", flush=True)
    generate_site(site, pages)
    port = free_port()
    nginx = start_nginx(work, site, port)
    db = work / "embedded.db"
    load_before = os.getloadavg()
    try:
        print(f"crawling it with kubecrawl crawl (load average {load_before[0]:.2f}) …", flush=True)
        run = run_crawl(f"http://127.0.0.1:{port}", pages, db, work)
        load_after = os.getloadavg()
        crawl = run["crawl"]
        curve = tenths(db, crawl["id"], run["cpu_samples"])
        db_bytes = sum(path.stat().st_size for path in work.glob("embedded.db*"))
    finally:
        stop_site(nginx, work, keep=args.keep)

    fetched = crawl["counters"]["fetched"]
    seconds = crawl_seconds(crawl)
    flatness = curve[-1]["rate"] / curve[0]["rate"]
    # The same ratio in CPU per page (first over last, so that > 1 is cheaper at the end): free of the machine's load.
    cpu_flatness = curve[0]["cpu_ms_per_page"] / max(curve[-1]["cpu_ms_per_page"], 1e-9)
    print(
        f"\n  {fetched} of {pages} pages fetched in {seconds:.1f} s = {fetched / seconds:.0f} pages/s ({crawl['state']})"
    )
    print(f"  load average {load_before[0]:.2f} before, {load_after[0]:.2f} after (1 minute)\n")
    print("  tenth  pages/s  CPU ms/page")
    print(plot(curve))
    print()
    print(
        f"  last tenth / first tenth  {flatness:>6.2f}   (target ≥ {FLATNESS_TARGET})  "
        f"{'ok' if flatness >= FLATNESS_TARGET else 'MISSED'}"
    )
    print(
        f"  the same in CPU per page  {cpu_flatness:>6.2f}   (first tenth's CPU per page / last tenth's; "
        "what the machine's other load does not move)"
    )
    print(
        f"  peak RSS                  {run['max_rss_mb']:>6.0f} MB (target ≤ {RSS_TARGET_MB} MB)  "
        f"{'ok' if run['max_rss_mb'] <= RSS_TARGET_MB else 'MISSED'}"
    )
    print(f"  database                  {db_bytes / fetched:>6.0f} bytes per page ({db_bytes / 1e6:.0f} MB)")
    print(f"  CPU                       {1000 * run['cpu_seconds'] / fetched:>6.2f} ms per page (whole process)")
    print()
    save_result(
        {
            "pages": pages,
            "fetched": fetched,
            "seconds": seconds,
            "state": crawl["state"],
            "tenths": curve,
            "last_over_first": flatness,
            "flat_met": flatness >= FLATNESS_TARGET,
            "cpu_first_over_last": cpu_flatness,
            "max_rss_mb": run["max_rss_mb"],
            "rss_met": run["max_rss_mb"] <= RSS_TARGET_MB,
            "db_bytes": db_bytes,
            "db_bytes_per_page": db_bytes / fetched,
            "cpu_seconds": run["cpu_seconds"],
            "load_average": {"before": load_before, "after": load_after},
        },
        args.json,
        "crawl-size",
    )


if __name__ == "__main__":
    main()
