"""Time from a CAPTURED webhook's acknowledgement to the campaign's totals showing the donation.

Usage: capture_latency.py BASE_URL N. Prints the campaign id on the first line, then p50/p99/max.
The server must accept unsigned webhooks (payments.allow_unsigned_webhooks = true). Webhook
timestamps are the current time: the server refuses event times more than 5 minutes ahead.
"""
import json
import sys
import time
import urllib.request
from datetime import datetime, timezone

base, n = sys.argv[1], int(sys.argv[2])


def call(method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data, {"content-type": "application/json"}, method=method)
    with urllib.request.urlopen(req) as resp:
        return json.load(resp)


campaign = call("POST", "/api/v1/campaigns", {"title": "latency", "goal_amount": 1000000})["id"]
samples = []
for i in range(n):
    d = call("POST", "/api/v1/donations", {"campaign_id": campaign, "donor_email": f"d{i}@example.org", "amount": 1})
    pi = call("POST", "/api/v1/payments/intent", {"donation_id": d["id"], "amount": 1})["payment_intent_id"]
    for status in ("AUTHORIZED", "CAPTURED"):
        now = datetime.now(timezone.utc).isoformat()
        call("POST", "/api/v1/payments/webhook", {"payment_intent_id": pi, "status": status, "timestamp": now})
    start = time.perf_counter()
    while call("GET", f"/api/v1/totals/campaigns/{campaign}")["total_donations"] < i + 1:
        if time.perf_counter() - start > 10:
            sys.exit(f"donation {i} did not reach the totals within 10 s")
    samples.append((time.perf_counter() - start) * 1000)
samples.sort()
print(campaign)
print(f"p50 {samples[len(samples) // 2]:.2f} ms, p99 {samples[int(len(samples) * 0.99) - 1]:.2f} ms, "
      f"max {samples[-1]:.2f} ms over {len(samples)} donations (polling the public endpoint)")
