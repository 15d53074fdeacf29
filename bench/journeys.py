#!/usr/bin/env python3
"""Complete donor journeys against a running server (issue #14, point 2). Stdlib only.

A journey is what a donor and the provider do for one donation, each step on the same raw
HTTP/1.1 keep-alive connection:
  POST /api/v1/donations (Idempotency-Key), POST /api/v1/payments/intent (Idempotency-Key),
  then the AUTHORIZED and CAPTURED webhooks, signed with CFA-Signature
  (t=<unix>,v1=hex HMAC-SHA256(secret, "<t>.<raw body>")) and stamped with the current time.

  journeys.py steady BASE_URL [--rate 500] [--seconds 60] [--campaigns 20]
      Open loop: journey j is due at t0 + j/rate whatever happened before; one that cannot start
      on time (every connection busy, or the client itself behind) starts late and is counted
      as late, never skipped. Journeys are spread over --workers processes and --connections
      connections. Prints journeys started/completed per second (and the ratio to the 500/s
      target), the answers that were not 2xx (or a webhook not "processed") by status and code,
      per-request p50/p99, and capture -> totals three ways: the server's `consumer_lag`
      histogram (GET /metrics before and after; consumers `donation-status`, which turns a
      CAPTURED payment into a COMPLETED donation, and `totals`, which adds that donation to its
      campaign), a client probe (a few journeys per second on a campaign of their own, each
      timed from its CAPTURED acknowledgement until the public totals count it), and, at the
      end, how long after the last CAPTURED acknowledgement every campaign's public totals equal
      what the client captured.
  journeys.py burst BASE_URL [--journeys 2000] [--connections 64]
      Every journey to one campaign, as fast as the server takes them (each connection runs
      journeys back to back). Prints how long after the last CAPTURED acknowledgement
      GET /api/v1/totals/campaigns/{id} is exact (total_donations and total_amount_minor equal
      what was captured), and the ratio to the 2 s target.

One load process is enough for the 500/s target: a journey costs the client 250-400 µs of CPU
(measured against a stand-in server answering in 0-30 ms: 2,000 journeys/s from one process at
50 % of a core), so 500/s takes about a fifth of a core. --workers defaults to one process per
1,000 journeys/s offered; every run prints each process's CPU share and warns above 80 %.

Campaigns are created by the script (POST /api/v1/campaigns: an operator endpoint, so pass
--api-key when the server has keys). Exit status: 1 if any request got a 5xx or no answer, or
the totals never became exact (the reason is printed); missing a performance target is printed,
not an exit status. 2 on bad usage or when the set-up fails.
"""
import argparse
import asyncio
import collections
import hashlib
import hmac
import json
import math
import multiprocessing
import os
import re
import resource
import sys
import time
import uuid
from urllib.parse import urlsplit

TARGET_RATE = 500.0  # journeys/s
TARGET_P99 = 1.0  # capture -> totals, seconds
TARGET_SETTLE = 2.0  # burst: last CAPTURED ack -> totals exact, seconds
LATE = 0.050  # a start this far behind its schedule counts as late
KINDS = ("donation", "intent", "authorized", "captured")


# --------------------------------------------------------------------------- raw HTTP/1.1


class NoAnswer(Exception):
    """The request got no (complete) answer: connection refused or reset, or timed out."""


class Conn:
    """One keep-alive HTTP/1.1 connection, opened on first use and again after a close."""

    def __init__(self, host, port, timeout):
        self.host, self.port, self.timeout = host, port, timeout
        self.reader = self.writer = None
        self.used = False

    def close(self):
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def request(self, method, path, body=b"", headers=""):
        """(status, headers {lowercase bytes: bytes}, body); raises NoAnswer."""
        data = (
            f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\n{headers}"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        for attempt in (0, 1):
            reused = self.writer is not None and self.used
            try:
                if self.writer is None:
                    self.reader, self.writer = await asyncio.wait_for(
                        asyncio.open_connection(self.host, self.port, limit=1 << 22), self.timeout)
                    self.used = False
                self.writer.write(data)
                answer = await asyncio.wait_for(self._read(), self.timeout)
                self.used = True
                return answer
            except asyncio.TimeoutError:
                self.close()
                raise NoAnswer("timeout") from None
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as e:
                self.close()
                # A keep-alive connection the server closed while idle: send again on a new one
                # (every request here is idempotent: keys, event ids, GETs).
                if attempt == 0 and reused:
                    continue
                raise NoAnswer(type(e).__name__) from None
        raise NoAnswer("unreachable")

    async def _read(self):
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head[:-4].split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        hdrs = {}
        for line in lines[1:]:
            k, _, v = line.partition(b":")
            hdrs[k.strip().lower()] = v.strip()
        if b"content-length" in hdrs:
            body = await self.reader.readexactly(int(hdrs[b"content-length"]))
        elif hdrs.get(b"transfer-encoding", b"").lower() == b"chunked":
            parts = []
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    await self.reader.readuntil(b"\r\n")
                    break
                parts.append(await self.reader.readexactly(size))
                await self.reader.readexactly(2)
            body = b"".join(parts)
        else:
            body = await self.reader.read()
            self.close()
        if hdrs.get(b"connection", b"").lower() == b"close":
            self.close()
        return status, hdrs, body


def code_of(body):
    try:
        return json.loads(body).get("code", "") or ""
    except (ValueError, AttributeError):
        return body[:40].decode(errors="replace")


# --------------------------------------------------------------------------- one journey


def money(minor):
    return f"{minor // 100}.{minor % 100:02d}"


def iso_now():
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"


class Recorder:
    """What one process saw: latencies per request kind and every answer by status and code."""

    def __init__(self):
        self.lat = {k: [] for k in KINDS}
        self.answers = collections.Counter()
        self.server_errors = 0
        self.no_answer = 0

    def answer(self, kind, label):
        self.answers[(kind, label)] += 1

    async def call(self, conn, kind, method, path, body=b"", headers=""):
        """Sends one request; returns (status, body) or None when no answer came."""
        began = time.perf_counter()
        try:
            status, _, payload = await conn.request(method, path, body, headers)
        except NoAnswer as e:
            self.no_answer += 1
            self.answer(kind, f"no answer ({e})")
            return None
        if kind in self.lat:
            self.lat[kind].append(time.perf_counter() - began)
        if status >= 500:
            self.server_errors += 1
        if not 200 <= status < 300:
            self.answer(kind, f"{status} {code_of(payload)}".rstrip())
        return status, payload


class Journeys:
    """Runs journeys for one process; keeps what was captured, per campaign."""

    def __init__(self, opts, recorder):
        self.opts = opts
        self.rec = recorder
        self.secret = opts.webhook_secret.encode()
        self.captured = collections.defaultdict(lambda: [0, 0])  # campaign -> [count, minor]
        self.uncertain = []  # (campaign, intent, minor): CAPTURED sent, no answer
        self.last_ack = 0.0  # wall clock of the last CAPTURED acknowledgement

    def signed(self, body):
        t = int(time.time())
        sig = hmac.new(self.secret, b"%d." % t + body, hashlib.sha256).hexdigest()
        return f"CFA-Signature: t={t},v1={sig}\r\n"

    async def webhook(self, conn, kind, intent, status, minor):
        body = (
            f'{{"id":"evt-{intent}-{kind}","event_type":"payment.{kind}",'
            f'"payment_intent_id":"{intent}","status":"{status}","timestamp":"{iso_now()}",'
            f'"data":{{"amount_minor":{minor},"currency":"USD"}}}}'
        ).encode()
        got = await self.rec.call(conn, kind, "POST", "/api/v1/payments/webhook", body, self.signed(body))
        if got is None:
            return None
        code, payload = got
        if code != 200:
            return False
        try:
            outcome = json.loads(payload).get("status")
        except ValueError:
            outcome = None
        if outcome != "processed":
            reason = json.loads(payload).get("reason", "") if outcome else ""
            self.rec.answer(kind, f"200 {outcome} {reason}".rstrip())
            return False
        return True

    async def run(self, conn, tag, campaign, minor):
        """One journey; True when the CAPTURED webhook was processed."""
        body = (
            f'{{"campaign_id":"{campaign}","donor_email":"{tag}@example.org",'
            f'"donor_name":"Bench {tag}","amount":{money(minor)}}}'
        ).encode()
        got = await self.rec.call(conn, "donation", "POST", "/api/v1/donations", body,
                                  f"Idempotency-Key: d-{tag}\r\n")
        if got is None or got[0] != 201:
            return False
        donation = json.loads(got[1])["id"]
        body = f'{{"donation_id":"{donation}","amount":{money(minor)}}}'.encode()
        got = await self.rec.call(conn, "intent", "POST", "/api/v1/payments/intent", body,
                                  f"Idempotency-Key: i-{tag}\r\n")
        if got is None or got[0] != 201:
            return False
        intent = json.loads(got[1])["payment_intent_id"]
        if not await self.webhook(conn, "authorized", intent, "AUTHORIZED", minor):
            return False
        try:
            ok = await self.webhook(conn, "captured", intent, "CAPTURED", minor)
        except asyncio.CancelledError:  # cut off by the end of the drain: it may have applied
            self.uncertain.append((campaign, intent, minor))
            raise
        if ok is None:
            self.uncertain.append((campaign, intent, minor))
            return False
        if ok:
            self.last_ack = time.time()
            c = self.captured[campaign]
            c[0] += 1
            c[1] += minor
        return ok


def amount_of(j):
    """Varied amounts (1.00 to 100.99) so a sum that is off by one donation shows."""
    return 100 + (j * 7919) % 10000


# --------------------------------------------------------------------------- worker processes


def worker(opts, mode, wid, campaigns, t0_wall, pipe):
    """One load process: runs its share of the journeys, then sends ('done', …) at once (the
    parent starts timing the totals from it) and ('stats', …) after."""
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    try:
        result = asyncio.run(worker_async(opts, mode, wid, campaigns, t0_wall, pipe))
    except BaseException as e:  # report, never leave the parent waiting
        pipe.send(("error", f"worker {wid}: {type(e).__name__}: {e}"))
        raise
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    result["cpu"] = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    pipe.send(("stats", result))
    pipe.close()


async def worker_async(opts, mode, wid, campaigns, t0_wall, pipe):
    url = urlsplit(opts.base)
    loop = asyncio.get_running_loop()
    rec = Recorder()
    jr = Journeys(opts, rec)
    share = len(range(wid, opts.connections, opts.workers))
    pool = asyncio.Queue()
    for _ in range(max(1, share)):
        pool.put_nowait(Conn(url.hostname, url.port or 80, opts.timeout))
    t0 = loop.time() + (t0_wall - time.time())
    starts, lateness, completions, journey_lat = [], [], [], []
    failed = unfinished = 0
    run_id = opts.run_id

    async def one(j, due):
        nonlocal failed
        conn = await pool.get()
        began = loop.time()
        starts.append(began - t0)
        lateness.append(began - due)
        try:
            ok = await jr.run(conn, f"{run_id}-{j}", campaigns[j % len(campaigns)], amount_of(j))
        finally:
            pool.put_nowait(conn)
        if ok:
            done = loop.time()
            completions.append(done - t0)
            journey_lat.append(done - began)
        else:
            failed += 1

    await asyncio.sleep(max(0.0, t0 - loop.time()))
    if mode == "steady":
        total = int(opts.rate * opts.seconds)
        tasks = set()
        for j in range(wid, total, opts.workers):
            due = t0 + j / opts.rate
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(one(j, due))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            _, pending = await asyncio.wait(set(tasks), timeout=opts.drain)
            for task in pending:
                task.cancel()
            unfinished = len(pending)
            await asyncio.gather(*pending, return_exceptions=True)
    else:
        todo = iter(range(wid, opts.journeys, opts.workers))

        async def lane():
            for j in todo:
                await one(j, loop.time())

        await asyncio.gather(*(lane() for _ in range(max(1, share))))
    end = loop.time() - t0
    pipe.send(("done", {"last_ack": jr.last_ack, "captured": dict(jr.captured),
                        "uncertain": jr.uncertain}))
    while not pool.empty():
        pool.get_nowait().close()
    return {"lat": rec.lat, "answers": dict(rec.answers), "server_errors": rec.server_errors,
            "no_answer": rec.no_answer, "starts": starts, "lateness": lateness,
            "completions": completions, "journey_lat": journey_lat, "failed": failed,
            "unfinished": unfinished, "end": end}


# --------------------------------------------------------------------------- the parent


def pct(values, q):
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]  # nearest rank


def ms(seconds):
    return f"{seconds * 1000:.1f} ms" if seconds == seconds else "n/a"


METRIC = re.compile(r'^consumer_lag_(bucket|count|sum)\{([^}]*)\} (\S+)$')
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def lag_histograms(text):
    """{consumer: {"buckets": {le: cumulative}, "count": n, "sum": s}} from /metrics text."""
    out = collections.defaultdict(lambda: {"buckets": collections.Counter(), "count": 0.0, "sum": 0.0})
    for line in text.splitlines():
        m = METRIC.match(line)
        if not m:
            continue
        labels = dict(LABEL.findall(m.group(2)))
        h = out[labels.get("consumer", "?")]
        value = float(m.group(3))
        if m.group(1) == "bucket":
            h["buckets"][float(labels["le"])] += value  # +Inf parses as inf
        else:
            h[m.group(1)] += value
    return out


def lag_diff(before, after, consumer):
    a, b = after.get(consumer), before.get(consumer)
    if a is None:
        return None
    b = b or {"buckets": {}, "count": 0.0, "sum": 0.0}
    buckets = sorted((le, a["buckets"][le] - b["buckets"].get(le, 0.0)) for le in a["buckets"])
    return {"buckets": buckets, "count": a["count"] - b["count"], "sum": a["sum"] - b["sum"]}


def hist_quantile(h, q):
    """Prometheus's histogram_quantile: linear inside the bucket where the rank falls."""
    total = h["buckets"][-1][1] if h["buckets"] else 0
    if total <= 0:
        return float("nan")
    rank, lower, below = q * total, 0.0, 0.0
    for le, cum in h["buckets"]:
        if cum >= rank:
            if le == float("inf"):
                return float("inf")
            return lower + (le - lower) * ((rank - below) / (cum - below) if cum > below else 1)
        lower, below = le, cum
    return float("inf")


def share_within(h, bound):
    total = h["buckets"][-1][1] if h["buckets"] else 0
    if total <= 0:
        return float("nan")
    return next((cum for le, cum in h["buckets"] if le >= bound), total) / total


def highest_bucket(h):
    """The smallest bucket bound that holds every event: the max is at most this."""
    total = h["buckets"][-1][1] if h["buckets"] else 0
    return next((le for le, cum in h["buckets"] if cum >= total), float("inf"))


class Parent:
    def __init__(self, opts):
        self.opts = opts
        url = urlsplit(opts.base)
        self.host, self.port = url.hostname, url.port or 80
        self.rec = Recorder()  # the probe's and the set-up's requests
        self.auth = f"Authorization: Bearer {opts.api_key}\r\n" if opts.api_key else ""

    def conn(self):
        return Conn(self.host, self.port, self.opts.timeout)

    async def get_json(self, conn, path, auth=False):
        status, _, body = await conn.request("GET", path, b"", self.auth if auth else "")
        return status, (json.loads(body) if body[:1] in (b"{", b"[") else body)

    async def metrics(self):
        conn = self.conn()
        try:
            status, _, body = await conn.request("GET", "/metrics")
        finally:
            conn.close()
        if status != 200:
            raise SystemExit(f"GET /metrics answered {status}")
        return lag_histograms(body.decode())

    async def create_campaigns(self, n, title):
        conn = self.conn()
        ids = []
        try:
            for i in range(n):
                body = json.dumps({"title": f"{title} {i + 1}", "goal_amount": 1000000}).encode()
                status, _, payload = await conn.request("POST", "/api/v1/campaigns", body, self.auth)
                if status != 201:
                    raise SystemExit(f"could not create a campaign: POST /api/v1/campaigns answered "
                                     f"{status} {payload[:200].decode(errors='replace')}"
                                     + (" (pass --api-key)" if status in (401, 403) else ""))
                ids.append(json.loads(payload)["id"])
        finally:
            conn.close()
        return ids

    async def outbox(self):
        conn = self.conn()
        try:
            status, doc = await self.get_json(conn, "/api/v1/admin/outbox", auth=True)
        except (NoAnswer, ValueError):
            return None
        finally:
            conn.close()
        return doc if status == 200 else None

    async def resolve(self, uncertain, expected):
        """CAPTURED webhooks that got no answer: ask the payment what it became."""
        conn = self.conn()
        try:
            for campaign, intent, minor in uncertain:
                status, doc = await self.get_json(conn, f"/api/v1/payments/{intent}")
                if status == 200 and doc.get("status") == "CAPTURED":
                    e = expected.setdefault(campaign, [0, 0])
                    e[0] += 1
                    e[1] += minor
        finally:
            conn.close()

    async def settle(self, expected, timeout):
        """Polls the public totals of every campaign until they equal `expected`: one request at
        a time (the polling must not load the server it is timing), sweeping the campaigns not yet
        exact, then --poll between sweeps. Returns ({campaign: wall time first seen exact},
        {campaign: last seen (count, minor)})."""
        exact, seen = {}, {}
        conn = self.conn()
        deadline = time.time() + timeout
        try:
            while len(exact) < len(expected) and time.time() < deadline:
                for campaign, want in expected.items():
                    if campaign in exact:
                        continue
                    got = await self.rec.call(conn, "totals", "GET", f"/api/v1/totals/campaigns/{campaign}")
                    now = time.time()
                    if got and got[0] == 200:
                        doc = json.loads(got[1])
                        seen[campaign] = (doc["total_donations"], doc["total_amount_minor"])
                        if seen[campaign] == tuple(want):
                            exact[campaign] = now
                if len(exact) < len(expected):
                    await asyncio.sleep(self.opts.poll)
        finally:
            conn.close()
        return exact, seen

    async def probe(self, campaign, stop, samples):
        """Journeys on a campaign of their own, one at a time, each timed from its CAPTURED
        acknowledgement until the public totals count it."""
        conn = self.conn()
        jr = Journeys(self.opts, self.rec)
        k = attempts = 0
        interval = 1.0 / self.opts.probe_rate
        try:
            while not stop.is_set():
                began = time.monotonic()
                attempts += 1
                captured = await jr.run(conn, f"{self.opts.run_id}-probe{attempts}", campaign, amount_of(attempts))
                if jr.uncertain:  # a capture without answer: the count no longer tells which
                    print("  (probe stopped: a CAPTURED webhook got no answer)")
                    break
                if captured:
                    k += 1
                    acked = time.perf_counter()
                    while True:
                        got = await self.rec.call(conn, "totals", "GET", f"/api/v1/totals/campaigns/{campaign}")
                        if got and got[0] == 200 and json.loads(got[1])["total_donations"] >= k:
                            samples.append(time.perf_counter() - acked)
                            break
                        if time.perf_counter() - acked > self.opts.settle_timeout:
                            samples.append(float("inf"))
                            break
                        if stop.is_set():  # the load is over: the end-of-run check takes over
                            break
                        await asyncio.sleep(self.opts.poll)
                try:
                    await asyncio.wait_for(stop.wait(), max(0.0, interval - (time.monotonic() - began)))
                except asyncio.TimeoutError:
                    pass
        finally:
            conn.close()
        return jr


async def collect(pipes, on_done):
    """Reads every worker's ('done', …) then ('stats', …); calls on_done once all are done."""
    loop = asyncio.get_running_loop()
    done, stats = [], []

    async def receive(p, wanted):
        try:
            kind, payload = await loop.run_in_executor(None, p.recv)
        except EOFError:
            raise SystemExit("a worker process died without reporting") from None
        if kind != wanted:
            raise SystemExit(payload if kind == "error" else f"worker sent {kind}, not {wanted}")
        return payload

    for p in pipes:
        done.append(await receive(p, "done"))
    await on_done(done)
    for p in pipes:
        stats.append(await receive(p, "stats"))
    return done, stats


def start_workers(opts, mode, campaigns, t0_wall):
    ctx = multiprocessing.get_context("fork")
    pipes, procs = [], []
    for wid in range(opts.workers):
        parent_end, child_end = ctx.Pipe(duplex=False)
        p = ctx.Process(target=worker, args=(opts, mode, wid, campaigns, t0_wall, child_end), daemon=True)
        p.start()
        child_end.close()
        pipes.append(parent_end)
        procs.append(p)
    return pipes, procs


def merge(stats):
    m = {"lat": {k: [] for k in KINDS}, "answers": collections.Counter(), "server_errors": 0,
         "no_answer": 0, "starts": [], "lateness": [], "completions": [], "journey_lat": [],
         "failed": 0, "unfinished": 0, "end": 0.0, "cpu": []}
    for s in stats:
        for k in KINDS:
            m["lat"][k] += s["lat"][k]
        m["answers"].update(s["answers"])
        for key in ("server_errors", "no_answer", "failed", "unfinished"):
            m[key] += s[key]
        for key in ("starts", "lateness", "completions", "journey_lat"):
            m[key] += s[key]
        m["end"] = max(m["end"], s["end"])
        m["cpu"].append(s["cpu"])
    return m


def print_requests(m):
    print("requests (time from the request written to its answer read):")
    everything = []
    for k in KINDS:
        v = m["lat"][k]
        everything += v
        print(f"  {k:<11} {len(v):>7}  p50 {ms(pct(v, .5)):>10}  p99 {ms(pct(v, .99)):>10}  max {ms(max(v, default=float('nan')))}")
    print(f"  {'all':<11} {len(everything):>7}  p50 {ms(pct(everything, .5)):>10}  p99 {ms(pct(everything, .99)):>10}")
    if m["answers"]:
        print("answers other than 2xx, and webhooks not processed:")
        for (kind, label), n in sorted(m["answers"].items()):
            print(f"  {kind} {label}: {n}")
    else:
        print("answers: every request 2xx, every webhook processed")


def print_client_cpu(m, journeys, wall):
    """The load processes' own CPU: whether the client, not the server, set the pace."""
    cpu = sum(m["cpu"])
    shares = [c / wall for c in m["cpu"]] if wall > 0 else []
    each = ", ".join(f"{x * 100:.0f} %" for x in shares) or "?"
    per = f", {cpu / journeys * 1e6:.0f} µs per journey" if journeys else ""
    print(f"client: {len(m['cpu'])} worker process(es), CPU {cpu:.1f} s ({each} of a core){per}")
    if any(x > 0.8 for x in shares):
        print("  the client was near its own limit: its figures may understate the server (try --workers)")


def print_lag(label, h):
    if h is None or h["count"] <= 0:
        print(f"  server consumer_lag{{consumer=\"{label}\"}}: no events (metric missing?)")
        return float("nan")
    p50, p99 = hist_quantile(h, .5), hist_quantile(h, .99)
    print(f"  server consumer_lag{{consumer=\"{label}\"}}: {h['count']:.0f} events, p50 {ms(p50)}, "
          f"p99 {ms(p99)}, max ≤ {highest_bucket(h):g} s, within 1 s: {share_within(h, 1.0) * 100:.2f} %"
          f", mean {ms(h['sum'] / h['count'])}")
    return p99


async def steady(opts):
    parent = Parent(opts)
    campaigns = await parent.create_campaigns(opts.campaigns, f"journeys {opts.run_id}")
    probe_campaign = (await parent.create_campaigns(1, f"probe {opts.run_id}"))[0] if opts.probe_rate > 0 else None
    before = await parent.metrics()
    total = int(opts.rate * opts.seconds)
    print(f"== steady: {opts.rate:g} journeys/s offered for {opts.seconds:g} s ({total} journeys) over "
          f"{opts.campaigns} campaigns; {opts.workers} worker process(es), {opts.connections} connections"
          + (f"; probe {opts.probe_rate:g}/s on its own campaign" if probe_campaign else ""))
    sys.stdout.flush()
    t0_wall = time.time() + 1.0
    pipes, procs = start_workers(opts, "steady", campaigns, t0_wall)
    stop = asyncio.Event()
    samples = []
    probe_task = None
    if probe_campaign:
        await asyncio.sleep(max(0.0, t0_wall - time.time()))
        probe_task = asyncio.create_task(parent.probe(probe_campaign, stop, samples))
    state = {}

    async def on_done(done):
        state["load_end"] = time.time()
        stop.set()
        outbox = asyncio.create_task(parent.outbox())
        probe_jr = await probe_task if probe_task else None
        expected = {c: [0, 0] for c in campaigns}
        uncertain = []
        last_ack = 0.0
        for d in done:
            last_ack = max(last_ack, d["last_ack"])
            uncertain += d["uncertain"]
            for c, (n, minor) in d["captured"].items():
                expected[c][0] += n
                expected[c][1] += minor
        if probe_jr:
            last_ack = max(last_ack, probe_jr.last_ack)
            expected[probe_campaign] = list(probe_jr.captured.get(probe_campaign, [0, 0]))
            uncertain += probe_jr.uncertain
        if uncertain:
            await parent.resolve(uncertain, expected)
        state["poll_began"] = time.time()
        state["expected"] = expected
        state["last_ack"] = last_ack
        state["timeout"] = opts.settle_timeout
        state["exact"], state["seen"] = await parent.settle(expected, opts.settle_timeout)
        state["outbox"] = await outbox

    done, stats = await collect(pipes, on_done)
    for p in procs:
        p.join()
    after = await parent.metrics()
    m = merge(stats)
    m["answers"].update({(f"probe/{k}", label): n for (k, label), n in parent.rec.answers.items()})
    m["server_errors"] += parent.rec.server_errors
    m["no_answer"] += parent.rec.no_answer
    completed = len(m["completions"])
    started = len(m["starts"])
    window = max(opts.seconds, max(m["starts"], default=0.0))
    print(f"journeys: {total} scheduled, {started} started, {completed} completed, {m['failed']} failed, "
          f"{m['unfinished']} unfinished after the {opts.drain:g} s drain")
    late = sum(1 for x in m["lateness"] if x > LATE)
    print(f"  started   {started / window:8.1f}/s  (late by more than {LATE * 1000:.0f} ms: {late}, "
          f"{late / max(1, started) * 100:.1f} %; lateness p99 {ms(pct(m['lateness'], .99))}, "
          f"max {ms(max(m['lateness'], default=float('nan')))})")
    first, last = min(m["completions"], default=0.0), max(m["completions"], default=0.0)
    rate = (completed - 1) / (last - first) if completed > 1 and last > first else 0.0
    print(f"  completed {rate:8.1f}/s  (from the first completion, {first:.2f} s in, to the last, "
          f"{last:.2f} s in) → {rate / TARGET_RATE:.3f} of the {TARGET_RATE:g}/s target")
    step = 10 if opts.seconds >= 30 else max(1, int(opts.seconds // 5))
    per = collections.Counter(int(t // step) for t in m["completions"] if t < opts.seconds)
    windows = [per.get(i, 0) / step for i in range(int(opts.seconds // step))]
    overtime = [t for t in m["completions"] if t >= opts.seconds]
    print(f"  completed/s per {step} s window of the schedule: " + " ".join(f"{w:.0f}" for w in windows)
          + (f"; then {len(overtime)} more in the {max(overtime) - opts.seconds:.1f} s after it"
             if overtime else ""))
    print(f"  journey (first request written → CAPTURED acknowledged): p50 {ms(pct(m['journey_lat'], .5))}, "
          f"p99 {ms(pct(m['journey_lat'], .99))}")
    print_requests(m)
    print("capture → totals:")
    status_h = lag_diff(before, after, "donation-status")
    totals_h = lag_diff(before, after, "totals")
    p99_status = print_lag("donation-status", status_h)
    p99_totals = print_lag("totals", totals_h)
    server_p99 = p99_status + p99_totals
    if server_p99 == server_p99:
        print(f"    capture → totals, server side (p99 donation-status + p99 totals, an upper estimate): "
              f"{ms(server_p99)} → {server_p99 / TARGET_P99:.3f} of the {TARGET_P99:g} s target")
    finite = [s for s in samples if s != float("inf")]
    if samples:
        p99 = pct(samples, .99)
        print(f"  client probe: {len(samples)} journeys, public totals counted the donation p50 "
              f"{ms(pct(samples, .5))}, p99 {ms(p99)}, max {ms(max(samples))} after the CAPTURED ack "
              f"(polled every {opts.poll * 1000:.0f} ms) → p99 {p99 / TARGET_P99:.3f} of the {TARGET_P99:g} s target"
              + (f"; {len(samples) - len(finite)} never counted within {opts.settle_timeout:g} s"
                 if len(finite) < len(samples) else ""))
    ob = state.get("outbox")
    if ob:
        print(f"  outbox when the load ended: {ob.get('pending')} pending, oldest "
              f"{ob.get('oldest_pending_age_seconds') or 0:.2f} s old")
    code = report_settle(state, None, None, opts.poll)
    print_client_cpu(m, started, state["load_end"] - t0_wall)
    return verdict(m, code)


def report_settle(state, target, target_name, poll):
    exact, seen, expected = state["exact"], state["seen"], state["expected"]
    last_ack = state["last_ack"]
    if not last_ack:
        print("  no CAPTURED webhook was processed: nothing to check the totals against")
        return 1
    lag = state["poll_began"] - last_ack
    if len(exact) == len(expected):
        t = max(exact.values()) - last_ack
        n = sum(e[0] for e in expected.values())
        minor = sum(e[1] for e in expected.values())
        print(f"  totals exact on all {len(expected)} campaign(s) ({n} donations, {money(minor)}) "
              f"{t * 1000:.0f} ms after the last CAPTURED ack (polling, one request at a time and "
              f"{poll * 1000:.0f} ms between sweeps, began {lag * 1000:.0f} ms after it)"
              + (f" → {t / target:.3f} of the {target:g} s {target_name}" if target else ""))
        return 0
    print(f"  totals NOT exact {state['timeout']:g} s after polling began:")
    for c, want in expected.items():
        if c not in exact:
            print(f"    campaign {c}: expected ({want[0]} donations, {want[1]} minor units), "
                  f"last seen {seen.get(c, 'no answer')}")
    return 1


def verdict(m, totals_code):
    reasons = []
    if m["server_errors"]:
        reasons.append(f"{m['server_errors']} request(s) answered 5xx")
    if m["no_answer"]:
        reasons.append(f"{m['no_answer']} request(s) got no answer")
    if totals_code:
        reasons.append("the totals never became exact")
    if reasons:
        print("FAIL: " + "; ".join(reasons))
        return 1
    return 0


async def burst(opts):
    parent = Parent(opts)
    campaign = (await parent.create_campaigns(1, f"burst {opts.run_id}"))[0]
    print(f"== burst: {opts.journeys} journeys to one campaign ({campaign}), {opts.connections} "
          f"connections, {opts.workers} worker process(es)")
    sys.stdout.flush()
    t0_wall = time.time() + 0.5
    pipes, procs = start_workers(opts, "burst", [campaign], t0_wall)
    state = {}

    async def on_done(done):
        state["load_end"] = time.time()
        expected = {campaign: [0, 0]}
        uncertain = []
        for d in done:
            uncertain += d["uncertain"]
            for c, (n, minor) in d["captured"].items():
                expected[c][0] += n
                expected[c][1] += minor
        if uncertain:
            await parent.resolve(uncertain, expected)
        state["last_ack"] = max(d["last_ack"] for d in done)
        state["poll_began"] = time.time()
        state["expected"] = expected
        state["timeout"] = opts.settle_timeout
        state["exact"], state["seen"] = await parent.settle(expected, opts.settle_timeout)

    done, stats = await collect(pipes, on_done)
    for p in procs:
        p.join()
    m = merge(stats)
    m["answers"].update({(f"parent/{k}", label): n for (k, label), n in parent.rec.answers.items()})
    m["server_errors"] += parent.rec.server_errors
    m["no_answer"] += parent.rec.no_answer
    completed = len(m["completions"])
    took = state["load_end"] - t0_wall
    print(f"journeys: {completed} of {opts.journeys} completed in {took:.2f} s ({completed / took:.1f}/s), "
          f"{m['failed']} failed")
    print_requests(m)
    print("totals:")
    if completed != opts.journeys:
        print(f"  (checked against the {completed} journeys whose CAPTURED webhook was processed)")
    code = report_settle(state, TARGET_SETTLE, "target", opts.poll)
    print_client_cpu(m, len(m["starts"]), took)
    return verdict(m, code)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["steady", "burst"])
    ap.add_argument("base", metavar="BASE_URL")
    ap.add_argument("--rate", type=float, default=500.0, help="steady: journeys/s offered (500)")
    ap.add_argument("--seconds", type=float, default=60.0, help="steady: how long (60)")
    ap.add_argument("--campaigns", type=int, default=20, help="steady: campaigns the journeys cycle over (20)")
    ap.add_argument("--probe-rate", type=float, default=2.0,
                    help="steady: probe journeys/s on a campaign of their own, 0 for none (2)")
    ap.add_argument("--journeys", type=int, default=2000, help="burst: how many (2000)")
    ap.add_argument("--connections", type=int, default=None,
                    help="connections in all (steady 128, burst 64), shared out between the workers")
    ap.add_argument("--workers", type=int, default=None,
                    help="load processes (default: 1 per 1,000 journeys/s offered, at most the CPU count; burst 1)")
    ap.add_argument("--webhook-secret", default="whsec_bench")
    ap.add_argument("--api-key", default=os.environ.get("CFA_BENCH_API_KEY", ""),
                    help="operator key, for creating the campaigns (and reading the outbox)")
    ap.add_argument("--timeout", type=float, default=30.0, help="per request, seconds (30)")
    ap.add_argument("--drain", type=float, default=60.0,
                    help="steady: how long journeys still running at the end may take (60)")
    ap.add_argument("--settle-timeout", type=float, default=60.0,
                    help="how long to wait for exact totals (60)")
    ap.add_argument("--poll", type=float, default=0.005, help="totals polling interval, seconds (0.005)")
    opts = ap.parse_args()
    opts.base = opts.base.rstrip("/")
    opts.run_id = uuid.uuid4().hex[:10]
    if opts.connections is None:
        opts.connections = 128 if opts.mode == "steady" else 64
    if opts.workers is None:
        if opts.mode == "steady":
            opts.workers = max(1, min(os.cpu_count() or 1, -(-int(opts.rate) // 1000)))
        else:
            opts.workers = 1
    opts.workers = max(1, min(opts.workers, opts.connections))
    try:
        code = asyncio.run(steady(opts) if opts.mode == "steady" else burst(opts))
    except NoAnswer as e:
        print(f"the server did not answer during set-up: {e}", file=sys.stderr)
        code = 2
    sys.exit(code)


if __name__ == "__main__":
    main()
