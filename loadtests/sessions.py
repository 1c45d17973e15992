#!/usr/bin/env python3
"""Opens N idle MCP agent sessions against muster and reports muster's RSS per session.

    python loadtests/sessions.py URL PID N [TOOL CALLS]   (the peers' Python has httpx)

Each session: initialize + notifications/initialized over streamable HTTP (2025-06-18). Sessions
stay open (muster keeps them until its idle timeout). RSS is read from /proc/PID/status before
and after; the difference divided by N is the cost of one idle agent session. With TOOL and
CALLS, every session then calls TOOL (arguments {"text": "hi"}) CALLS times, and RSS is read
again: a session's cost must not grow with the calls it made.
"""
import sys
import time

try:
    import httpx
except ImportError:  # mcp 2.x ships it as httpx2
    import httpx2 as httpx


def rss_kib(pid: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def main() -> int:
    url, pid, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "sessions.py", "version": "0"}}}
    tool, calls = (sys.argv[4], int(sys.argv[5])) if len(sys.argv) > 5 else (None, 0)
    before = rss_kib(pid)
    started = time.time()
    sessions = []
    with httpx.Client(timeout=10.0, limits=httpx.Limits(max_connections=8)) as client:
        for _ in range(n):
            r = client.post(url, json=init, headers=headers)
            sid = r.headers.get("mcp-session-id")
            if r.status_code != 200 or not sid:
                print(f"initialize failed: {r.status_code} {r.text[:200]}", file=sys.stderr)
                return 1
            h = dict(headers, **{"mcp-session-id": sid, "mcp-protocol-version": "2025-06-18"})
            client.post(url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=h)
            sessions.append(h)
        time.sleep(1.0)
        after = rss_kib(pid)
        print(f"sessions={len(sessions)} seconds={time.time() - started:.1f} rss_before_kib={before} "
              f"rss_after_kib={after} per_session_kib={(after - before) / max(len(sessions), 1):.2f}")
        if not tool:
            return 0
        failed = 0
        for i in range(calls):
            for h in sessions:
                call = {"jsonrpc": "2.0", "id": 2 + i, "method": "tools/call",
                        "params": {"name": tool, "arguments": {"text": "hi"}}}
                r = client.post(url, json=call, headers=h)
                failed += r.status_code != 200 or '"isError":true' in r.text
        time.sleep(1.0)
        called = rss_kib(pid)
        print(f"calls={calls * len(sessions)} failed={failed} rss_after_calls_kib={called} "
              f"per_session_kib={(called - before) / max(len(sessions), 1):.2f}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
