#!/usr/bin/env python3
"""A soak of selfmon: checks and log ingestion at a steady rate for a long time, sampling the process as it goes.

selfmon (the binary given, normally the release build) runs in a temporary directory with CHECKS `http` checks of
its own `/health` at an interval that makes the given checks a minute, while posters send log lines over HTTP at
the given rate in batches. Every SAMPLE seconds the script records selfmon's resident memory, its open files, the
storage writer's queue depth, SQLite's heap, selfmon's own heap as jemalloc counts it (allocated and resident) and
the C libraries' heap as glibc counts it (allocated and free in its arenas; all from `/metrics`), the checks run
and the lines stored. At the end it prints the series as CSV and a summary: RSS growth after the first ten minutes
(the first tenth of a run under 20 minutes; the goal: under 5 %), split into SQLite's page caches (which fill up to
their bound as the store grows), the rest of the heap and file-backed pages; the
rates reached and any request that failed. All traffic goes to 127.0.0.1; every loop ends with the run.

    scripts/soak.py --binary target/release/selfmon --minutes 60 --checks-per-minute 1000 --lines-per-second 10000
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def metric(text, name):
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


def metric_sum(text, name):
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


def memory_mib(pid):
    """Resident memory in MiB: the whole, its anonymous part (heaps, stacks) and its file-backed part (code, maps)."""
    found = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
                found[key] = round(int(value.split()[0]) / 1024, 1)
    return found


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary", default="target/release/selfmon")
    parser.add_argument("--minutes", type=float, default=60)
    parser.add_argument("--checks-per-minute", type=int, default=1000)
    parser.add_argument("--checks", type=int, default=100, help="how many checks share the rate")
    parser.add_argument("--lines-per-second", type=int, default=10000)
    parser.add_argument("--batch", type=int, default=500, help="lines per POST")
    parser.add_argument("--posters", type=int, default=4)
    parser.add_argument("--sample", type=float, default=10, help="seconds between samples")
    args = parser.parse_args()

    binary = os.path.abspath(args.binary)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    work = tempfile.mkdtemp(prefix="selfmon-soak-")
    port = free_port()
    interval = max(1.0, args.checks * 60.0 / args.checks_per_minute)
    checks = "".join(
        f'\n[[check]]\nname = "soak-{n}"\nplugin = "http"\ninterval = "{interval:g}s"\n'
        f'target = "http://127.0.0.1:{port}/health"\n'
        for n in range(args.checks)
    )
    with open(os.path.join(work, "selfmon.toml"), "w") as config:
        config.write(
            f'[server]\napi_listen = "127.0.0.1:{port}"\n\n[api]\nrate_limit = 0\n\n'
            f'[storage]\npath = "selfmon.db"\n\n[dashboard]\nenabled = false\n\n'
            f'[plugins]\ncache_dir = "{root}/target/tmp/plugin-cache"\n\n'
            f'[scheduler]\nmax_concurrent = 64\n{checks}'
        )
    server = subprocess.Popen(
        [binary, "--config", "selfmon.toml", "serve"],
        cwd=work,
        stdout=subprocess.DEVNULL,
        stderr=open(os.path.join(work, "stderr.log"), "w"),
        env={k: v for k, v in os.environ.items() if not k.startswith("SELFMON_")} | {"SELFMON_LOG": "warn"},
    )
    base = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            urllib.request.urlopen(base + "/health", timeout=1).read()
            break
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.2)
    else:
        server.kill()
        sys.exit(f"selfmon did not start; see {work}/stderr.log")

    end = time.monotonic() + args.minutes * 60
    sent = [0] * args.posters
    failed = [0] * args.posters
    stop = threading.Event()

    def poster(index):
        # Each poster sends its share of the rate, one batch at a time, paced to the second.
        per_second = args.lines_per_second / args.posters
        started = time.monotonic()
        n = 0
        while not stop.is_set() and time.monotonic() < end:
            lines = "".join(
                json.dumps({"level": "info" if i % 10 else "error", "msg": f"soak {index} line {n + i}",
                            "service": f"svc-{i % 8}", "user_id": f"tg:{i % 1000}"}) + "\n"
                for i in range(args.batch)
            ).encode()
            request = urllib.request.Request(base + "/v1/logs", data=lines,
                                             headers={"content-type": "application/x-ndjson"})
            try:
                urllib.request.urlopen(request, timeout=30).read()
                sent[index] += args.batch
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                failed[index] += args.batch
            n += args.batch
            ahead = started + n / per_second - time.monotonic()
            if ahead > 0:
                stop.wait(ahead)

    threads = [threading.Thread(target=poster, args=(i,), daemon=True) for i in range(args.posters)]
    for thread in threads:
        thread.start()

    samples = []
    started = time.monotonic()
    while time.monotonic() < end and server.poll() is None:
        try:
            text = urllib.request.urlopen(base + "/metrics", timeout=10).read().decode()
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            text = ""
        memory = memory_mib(server.pid)
        heap = metric(text, "selfmon_storage_heap_bytes")
        mib = lambda name: None if metric(text, name) is None else round(metric(text, name) / 2**20, 1)
        samples.append({
            "seconds": round(time.monotonic() - started),
            "rss_mib": memory.get("VmRSS", 0.0),
            "anon_mib": memory.get("RssAnon", 0.0),
            "file_mib": memory.get("RssFile", 0.0),
            "shmem_mib": memory.get("RssShmem", 0.0),
            "sqlite_heap_mib": None if heap is None else round(heap / 2**20, 1),
            "heap_allocated_mib": mib("selfmon_heap_allocated_bytes"),
            "heap_resident_mib": mib("selfmon_heap_resident_bytes"),
            "c_heap_allocated_mib": mib("selfmon_c_heap_allocated_bytes"),
            "c_heap_free_mib": mib("selfmon_c_heap_free_bytes"),
            "open_files": len(os.listdir(f"/proc/{server.pid}/fd")),
            "writes_queued": metric(text, "selfmon_storage_writes_queued"),
            "check_runs": metric_sum(text, "selfmon_check_runs_total"),
            "lines_stored": metric_sum(text, "selfmon_log_records_total"),
            "lines_sent": sum(sent),
            "lines_failed": sum(failed),
        })
        time.sleep(max(0.0, args.sample - (time.monotonic() - started) % args.sample))
    stop.set()
    for thread in threads:
        thread.join(timeout=60)
    crashed = server.poll() is not None
    server.terminate()
    server.wait(timeout=60)

    print(",".join(samples[0].keys()))
    for sample in samples:
        print(",".join(str(value) for value in sample.values()))
    first, last = samples[0], samples[-1]
    # Growth is measured from ten minutes in (the first tenth of a run under 20 minutes): start-up, the writer's page
    # cache filling and the first retention pass are behind it by then.
    settle_at = 600 if last["seconds"] >= 1200 else last["seconds"] / 10
    settled = next(s for s in samples if s["seconds"] >= settle_at)
    seconds = max(1, last["seconds"] - first["seconds"])
    growth = 100.0 * (last["rss_mib"] - settled["rss_mib"]) / max(settled["rss_mib"], 0.1)
    peak = max(s["rss_mib"] for s in samples)
    print(f"\nran {last['seconds'] / 60:.1f} min{' (selfmon died!)' if crashed else ''}")
    print(f"check runs: {(last['check_runs'] - first['check_runs']) / seconds * 60:.0f} a minute")
    print(f"log lines stored: {(last['lines_stored'] - first['lines_stored']) / seconds:.0f} a second "
          f"({last['lines_sent']} acknowledged, {last['lines_failed']} refused or failed)")
    print(f"RSS: {settled['rss_mib']} MiB at {settled['seconds']} s, {last['rss_mib']} MiB at the end "
          f"({growth:+.1f} %), peak {peak} MiB")
    if settled["sqlite_heap_mib"] is not None and last["sqlite_heap_mib"] is not None:
        rest = [s["anon_mib"] - (s["sqlite_heap_mib"] or 0.0) for s in (settled, last)]
        print(f"  of which SQLite's heap (page caches): {settled['sqlite_heap_mib']} -> {last['sqlite_heap_mib']} MiB; "
              f"anonymous memory besides it: {rest[0]:.1f} -> {rest[1]:.1f} MiB "
              f"({100.0 * (rest[1] - rest[0]) / max(rest[0], 0.1):+.1f} %); "
              f"file-backed: {settled['file_mib']} -> {last['file_mib']} MiB")
    if settled["heap_allocated_mib"] is not None and last["heap_allocated_mib"] is not None:
        print(f"  selfmon's own heap (jemalloc): allocated {settled['heap_allocated_mib']} -> "
              f"{last['heap_allocated_mib']} MiB, resident {settled['heap_resident_mib']} -> "
              f"{last['heap_resident_mib']} MiB")
    if settled["c_heap_allocated_mib"] is not None and last["c_heap_allocated_mib"] is not None:
        print(f"  the C libraries' heap (glibc): allocated {settled['c_heap_allocated_mib']} -> "
              f"{last['c_heap_allocated_mib']} MiB, free in its arenas {settled['c_heap_free_mib']} -> "
              f"{last['c_heap_free_mib']} MiB")
    print(f"open files: {min(s['open_files'] for s in samples)}..{max(s['open_files'] for s in samples)}; "
          f"writer queue: at most {max(s['writes_queued'] or 0 for s in samples):.0f}")
    print(f"work directory: {work}")
    sys.exit(1 if crashed else 0)


if __name__ == "__main__":
    main()
