#!/usr/bin/env python3
"""Releases N donation requests at once against a running server and prints what came back.

Every request gets its own connection and its own Idempotency-Key; all connections are opened
first, then every request is written at the same moment. Prints the count per status and code
(e.g. `503 overloaded`), the slowest answer, and exits 1 if any answer is not 201.

Usage: bench/spike.py BASE_URL CAMPAIGN_ID [N]   (stdlib only)
"""
import asyncio
import collections
import json
import sys
import time
import uuid
from urllib.parse import urlsplit


async def one(host, port, path, body, start, results):
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError as e:
        results.append(("connect", str(e), 0.0))
        return
    key = uuid.uuid4()
    request = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Idempotency-Key: spike-{key}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body
    await start.wait()
    began = time.monotonic()
    try:
        writer.write(request)
        await writer.drain()
        raw = await reader.read()
    except OSError as e:
        results.append(("io", str(e), time.monotonic() - began))
        return
    finally:
        writer.close()
    elapsed = time.monotonic() - began
    head, _, payload = raw.partition(b"\r\n\r\n")
    status = head.split(b" ", 2)[1].decode() if head else "none"
    code = ""
    if not status.startswith("2"):
        try:
            code = json.loads(payload).get("code", "")
        except ValueError:
            code = payload[:60].decode(errors="replace")
    results.append((status, code, elapsed))


async def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    base, campaign = sys.argv[1], sys.argv[2]
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 4000
    url = urlsplit(base)
    body = json.dumps(
        {"campaign_id": campaign, "donor_email": "spike@example.org", "amount": 5}
    ).encode()
    start = asyncio.Event()
    results = []
    tasks = [
        asyncio.create_task(one(url.hostname, url.port or 80, "/api/v1/donations", body, start, results))
        for _ in range(n)
    ]
    await asyncio.sleep(1.0)  # let every connection open
    began = time.monotonic()
    start.set()
    await asyncio.gather(*tasks)
    took = time.monotonic() - began
    counts = collections.Counter((s, c) for s, c, _ in results)
    slowest = max((e for _, _, e in results), default=0.0)
    print(f"{n} donations released at once; all answered in {took:.1f} s (slowest {slowest:.1f} s)")
    for (status, code), count in sorted(counts.items()):
        print(f"  {status} {code}".rstrip() + f": {count}")
    created = counts.get(("201", ""), 0)
    print(f"answered 201: {created} of {n} ({created / n:.2f}); 5xx: {sum(c for (s, _), c in counts.items() if s.startswith('5'))}")
    sys.exit(0 if created == n else 1)


asyncio.run(main())
