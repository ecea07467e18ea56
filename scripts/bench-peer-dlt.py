#!/usr/bin/env python3
"""The peer: dlt loads the same "trending music detail" responses soundtrend polls, into the same
Postgres, with merge on (clip_id, region), and prints responses per second.

Run by scripts/bench-peer-dlt.sh (which also times soundtrend on the same responses and prints the
ratio); see docs/benchmarks.md. Needs `pip install "dlt[postgres]"` (the wrapper makes a venv).
"""

import argparse
import json
import time
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import dlt


def fetch(base: str, clip: str) -> dict:
    url = f"{base}v1/tiktok/trending/music/detail?period=7&region=US&clip_id={clip}"
    req = urllib.request.Request(url, headers={"Authorization": "Bearer bench"})
    with urllib.request.urlopen(req) as r:
        return json.load(r)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True, help="the demo server, e.g. http://127.0.0.1:8788/")
    ap.add_argument("--database-url", required=True)
    ap.add_argument("--first-clip", type=int, required=True)
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--pipelines-dir", required=True)
    args = ap.parse_args()

    clips = [str(args.first_clip + i) for i in range(args.n)]
    # Fetched before the clock starts: dlt is timed on loading alone.
    with ThreadPoolExecutor(16) as ex:
        bodies = list(ex.map(lambda c: fetch(args.base, c), clips))
    assert all(b.get("code") == 0 for b in bodies), "the demo server answered an error"

    @dlt.resource(name="sound_detail", write_disposition="merge", primary_key=["clip_id", "region"])
    def responses():
        for clip, body in zip(clips, bodies):
            row = dict(body["data"]["sound"])
            row["clip_id"] = clip
            row["region"] = "US"
            yield row

    # dlt insists on a password; with trust authentication (the local default) any will do.
    url = urllib.parse.urlsplit(args.database_url)
    if url.password is None:
        user = url.username or "postgres"
        url = url._replace(netloc=f"{user}:unused@{url.hostname}:{url.port or 5432}")
    pipeline = dlt.pipeline(
        pipeline_name="soundtrend_peer",
        destination=dlt.destinations.postgres(credentials=urllib.parse.urlunsplit(url)),
        dataset_name="dlt_peer",
        pipelines_dir=args.pipelines_dir,
    )
    started = time.perf_counter()
    pipeline.run(responses())
    elapsed = time.perf_counter() - started
    print(f"dlt {dlt.__version__}: {args.n} responses loaded with merge in {elapsed:.2f} s = "
          f"{args.n / elapsed:.0f} responses/s")
    print(f"DLT_RESPONSES_PER_SECOND={args.n / elapsed:.1f}")


if __name__ == "__main__":
    main()
