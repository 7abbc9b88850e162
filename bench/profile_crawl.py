"""Where an embedded crawl's time goes: ``kubecrawl crawl`` under py-spy, its samples grouped by part.

The same generated site and nginx as ``bench/crawl_vs_scrapy.py``; the crawl runs under ``py-spy record
--idle`` (idle samples count, so waiting shows) and the samples are read back from py-spy's collapsed stacks:

    parts       the share of the crawl's samples under each part of the page path (a sample counts for every
                part on its stack: parts nest, e.g. the fetch holds the httpx objects)
    self        the functions the samples were in (leaf frames), by file and function, top ``--top``
    µs/page     the crawl's CPU per page (the process's CPU time, start-up excluded, over the pages fetched)

Start-up (the samples under an import or before the crawl's first page) is left out: it is ``bench/startup.py``'s.

    .venv/bin/python bench/profile_crawl.py [--pages 2000] [--rate 1000] [--top 25] [--keep]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from crawl_vs_scrapy import CONCURRENCY, KUBECRAWL, generate_site, start_nginx, stop_site  # noqa: E402

# (label, a pattern any frame of the sample matches). Parts nest: a sample counts for every part it matches.
PARTS: tuple[tuple[str, str], ...] = (
    ("page pipeline (worker/crawling.py _handle)", r"\._handle \(kubecrawl/worker/crawling\.py"),
    ("  fetch (Fetcher.fetch)", r"\.fetch \(kubecrawl/fetch/fetching\.py"),
    ("    httpx objects (Request, URL, Headers, Response)", r"\(httpx/"),
    ("    aiohttp", r"\(aiohttp/"),
    ("  HTML parsing and extraction", r"^extract_metadata \("),
    ("  scope checks of the links", r"\.filter \(kubecrawl/fetch/scope\.py"),
    ("  robots and host turns", r"\.(_robots_for|turn|__aenter__|__aexit__) \(kubecrawl/worker/(crawling|turns)\.py"),
    ("  PageTask parse", r"\.model_validate_json \("),
    ("  page report (kubecrawl crawl's observer)", r"(\._report|^page_report) \(kubecrawl/worker/crawling\.py"),
    ("  publishing next pages", r"^publish_pages \("),
    ("frontier: page starts (group-committed)", r"^PageStarts\.start \("),
    ("frontier: page outcomes (group-committed)", r"^FinishInProcess\.settle \("),
    ("  statements on sqlite3 (store/prebuilt.py)", r"^Prebuilt\.run \("),
    ("  SQLAlchemy", r"\(sqlalchemy/"),
    ("progress bar (rich)", r"\(rich/"),
    ("logging (structlog)", r"\(structlog/"),
    ("metrics (prometheus_client)", r"\(prometheus_client/"),
)
# Start-up: imports, and a new database file's migration (which runs on the loop, before the first page).
_STARTUP = re.compile(r"^(_find_and_load|upgrade_if_behind|migrate) \(|\.(create|open)_database \(")
# The crawl itself: the main thread's event loop (its other samples are start-up and the final report).
_CRAWL = re.compile(r"^Runner\.run \(asyncio/runners\.py")


def frames(line: str) -> tuple[list[str], int]:
    stack, _, count = line.rpartition(" ")
    return stack.split(";"), int(count)


def short(frame: str) -> str:
    """``name (path/to/site-packages/pkg/mod.py:12)`` → ``name (pkg/mod.py)``."""
    match = re.match(r"^(.*?) \((.*?)(?::\d+)?\)$", frame)
    if not match:
        return frame
    name, path = match.groups()
    for marker in ("site-packages/", "/src/", "/lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{name} ({path})"


def analyse(raw: Path, top: int) -> dict[str, object]:
    samples: list[tuple[list[str], int]] = []
    for line in raw.read_text().splitlines():
        if not line.strip():
            continue
        stack, count = frames(line)
        stack = [short(frame) for frame in stack]
        if any(_STARTUP.match(frame) for frame in stack) or not any(_CRAWL.match(frame) for frame in stack):
            continue
        samples.append((stack, count))
    total = sum(count for _, count in samples) or 1
    parts: dict[str, float] = {}
    # uvloop's own C code, waiting in epoll included, shows as samples whose innermost Python frame is the runner
    in_loop = sum(count for stack, count in samples if _CRAWL.match(stack[-1]))
    for label, pattern in PARTS:
        compiled = re.compile(pattern)
        hits = sum(count for stack, count in samples if any(compiled.search(frame) for frame in stack))
        parts[label] = hits / total
    parts["the event loop's own code (uvloop), idle waits included"] = in_loop / total
    leaves: collections.Counter[str] = collections.Counter()
    modules: collections.Counter[str] = collections.Counter()
    for stack, count in samples:
        leaves[stack[-1]] += count
        modules[module_of(stack[-1])] += count
    return {
        "samples": total,
        "parts": parts,
        "modules": [(module, count / total) for module, count in modules.most_common(top)],
        "self": [(frame, count / total) for frame, count in leaves.most_common(top)],
    }


def module_of(frame: str) -> str:
    """Who a leaf frame's time belongs to: a kubecrawl module, else the top-level package or stdlib module."""
    match = re.match(r"^.*? \((.*?)(?::\d+)?\)$", frame)
    path = match.group(1) if match else frame
    if path.startswith("kubecrawl/"):
        return path
    return path.split("/", 1)[0].removesuffix(".py")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pages", type=int, default=2000)
    parser.add_argument(
        "--rate", type=int, default=250, help="py-spy samples per second (each pauses the crawl: more slow it down)"
    )
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--keep", action="store_true", help="keep the site, the database and py-spy's output")
    args = parser.parse_args()
    pyspy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if pyspy is None:
        raise SystemExit("py-spy is not installed: uv sync --locked --inexact --extra bench")

    from tests.support.servers import free_port

    work = Path(tempfile.mkdtemp(prefix="kubecrawl-profile-"))
    work.chmod(0o755)
    site = work / "site"
    generate_site(site, args.pages)
    port = free_port()
    nginx = start_nginx(work, site, port)
    raw = work / "profile.txt"
    try:
        env = dict(os.environ, KUBECRAWL_ALLOW_PRIVATE_TARGETS="true")
        crawl = [
            str(KUBECRAWL),
            *("crawl", f"http://127.0.0.1:{port}/", "--max-pages", str(args.pages), "--max-depth", "50"),
            *("--concurrency", str(CONCURRENCY), "--db", str(work / "crawl.db"), "--json"),
        ]
        command = [pyspy, "record", "--idle", "--format", "raw", "--rate", str(args.rate), "--output", str(raw)]
        out = subprocess.run([*command, "--", *crawl], capture_output=True, text=True, env=env, check=False)
        if out.returncode != 0:
            raise SystemExit(f"the profiled crawl failed ({out.returncode}):\n{out.stderr[-3000:]}")
        # py-spy writes its own lines around the crawl's JSON document
        result = json.loads(out.stdout[out.stdout.index("{") : out.stdout.rindex("}") + 1])
        analysis = analyse(raw, args.top)
    finally:
        stop_site(nginx, work, keep=args.keep)
    fetched = result["counters"]["fetched"]
    print(f"{fetched} pages, {result['state']}; {analysis['samples']} samples of the crawl (start-up excluded)")
    print("\npart                                                        share")
    for label, share in analysis["parts"].items():  # type: ignore[attr-defined]
        print(f"  {label:<58}{share * 100:6.1f} %")
    print("\nself, by module (kubecrawl) or package")
    for module, share in analysis["modules"]:  # type: ignore[attr-defined]
        print(f"  {share * 100:5.1f} %  {module}")
    print("\nself (leaf frames)")
    for frame, share in analysis["self"]:  # type: ignore[attr-defined]
        print(f"  {share * 100:5.1f} %  {frame}")
    if args.keep:
        print(f"\nkept: {work}")


if __name__ == "__main__":
    main()
