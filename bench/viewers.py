"""1,000 viewers of one campaign's live totals: what one change costs the server.

Usage: viewers.py BASE_URL [VIEWERS] [CHANGES]. Opens VIEWERS (default 1000) raw HTTP/1.1
connections to GET /api/v1/totals/campaigns/{id}/stream, waits until every one has its first
event, then makes CHANGES (default 20) completed donations one after the other (donation +
operator status override: an open server, no keys). For each change it measures the time until
the last viewer saw the new total, and from /metrics it reads how many database reads the
server made for viewers (totals_stream_reads_total) and how many events it sent
(totals_stream_events_total). Prints one summary line per figure.
"""
import asyncio
import json
import re
import sys
import time
import urllib.request
from urllib.parse import urlparse

base = sys.argv[1].rstrip("/")
viewers = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
changes = int(sys.argv[3]) if len(sys.argv) > 3 else 20
host, port = urlparse(base).hostname, urlparse(base).port or 80
TOTAL = re.compile(rb'"total_amount_minor":(\d+)')


def call(method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data, {"content-type": "application/json"}, method=method)
    with urllib.request.urlopen(req) as resp:
        return json.load(resp)


def metric(name):
    with urllib.request.urlopen(base + "/metrics") as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


class Viewer:
    def __init__(self):
        self.latest = -1
        self.events = 0
        self.changed = asyncio.Event()

    async def watch(self, campaign, ready):
        reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
        writer.write(f"GET /api/v1/totals/campaigns/{campaign}/stream HTTP/1.1\r\nHost: {host}\r\n"
                     "Accept: text/event-stream\r\n\r\n".encode())
        await writer.drain()
        buffer = b""
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                return
            buffer += chunk
            found = list(TOTAL.finditer(buffer))
            if found:
                self.events += len(found)
                self.latest = int(found[-1].group(1))
                buffer = buffer[found[-1].end():]
                if self.events == 1:
                    ready.release()
                self.changed.set()


async def main():
    campaign = call("POST", "/api/v1/campaigns", {"title": "watched", "goal_amount": 1000000})["id"]
    ready = asyncio.Semaphore(0)
    crowd = [Viewer() for _ in range(viewers)]
    started = time.perf_counter()
    tasks = [asyncio.create_task(v.watch(campaign, ready)) for v in crowd]
    for _ in range(viewers):
        await asyncio.wait_for(ready.acquire(), 60)
    connect_s = time.perf_counter() - started
    reads0, events0 = metric("totals_stream_reads_total"), metric("totals_stream_events_total")
    samples = []
    loop = asyncio.get_running_loop()
    for i in range(changes):
        expected = (i + 1) * 100
        d = await loop.run_in_executor(None, call, "POST", "/api/v1/donations",
                                       {"campaign_id": campaign, "donor_email": f"v{i}@example.org", "amount": 1})
        t0 = time.perf_counter()
        await loop.run_in_executor(None, call, "PATCH", f"/api/v1/donations/{d['id']}/status",
                                   {"status": "COMPLETED", "reason": "bench"})
        while any(v.latest < expected for v in crowd):
            if time.perf_counter() - t0 > 30:
                sys.exit(f"change {i} did not reach every viewer within 30 s")
            await asyncio.sleep(0.002)
        samples.append((time.perf_counter() - t0) * 1000)
    await asyncio.sleep(0.5)
    reads = metric("totals_stream_reads_total") - reads0
    events = metric("totals_stream_events_total") - events0
    for t in tasks:
        t.cancel()
    samples.sort()
    print(f"viewers {viewers}, all connected and served their first event in {connect_s:.2f} s")
    print(f"changes {changes}: database reads for viewers {reads:.0f} ({reads / changes:.2f} per change), "
          f"events sent {events:.0f} ({events / max(reads, 1):.0f} per read)")
    print(f"change to the last of {viewers} viewers (override acknowledged -> event read): p50 "
          f"{samples[len(samples) // 2]:.1f} ms, p90 {samples[int(len(samples) * 0.9) - 1]:.1f} ms, "
          f"max {samples[-1]:.1f} ms")


asyncio.run(main())
