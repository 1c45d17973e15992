// Many agent sessions calling one tool, each session kept open (as agents do): every VU opens a
// session once, then calls the tool in a loop. Run it against the echo upstream directly and
// through muster to see muster's own overhead (loadtests/run.sh does both).
//
//   k6 run --no-usage-report -e MCP_URL=http://127.0.0.1:8090/mcp -e TOOL=x_echo_echo \
//          -e TOOL_ARGS='{"text":"hi"}' -e VUS=16 -e DURATION=20s loadtests/k6/tool_call.js
//   optional: -e BEARER=<token> (a signed-in user; tokenExchange servers then exchange per user)
//             -e THINK_MS=500 (each session pauses this long after each call, as an agent thinking
//             does: 1,000 sessions with THINK_MS=500 offer about 2,000 calls/s whatever the latency,
//             so the latency is measured below saturation)
import http from 'k6/http';
import { check, sleep } from 'k6';
import { Trend, Counter } from 'k6/metrics';
import { headers, openSession, rpcResult } from './lib/mcp.js';

const URL = __ENV.MCP_URL || 'http://127.0.0.1:8090/mcp';
const TOOL = __ENV.TOOL || 'echo';
const TOOL_ARGS = JSON.parse(__ENV.TOOL_ARGS || '{"text":"hello from k6"}');
const PV = __ENV.PROTOCOL_VERSION || '2025-06-18';
const BEARER = __ENV.BEARER || '';
const THINK_MS = Number(__ENV.THINK_MS || 0);

export const options = {
  vus: Number(__ENV.VUS || 16),
  duration: __ENV.DURATION || '20s',
  thresholds: { http_req_failed: ['rate<0.001'], checks: ['rate>0.999'] },
};

const callMs = new Trend('mcp_tools_call_ms', true);
const errors = new Counter('mcp_call_errors');
let sid; // one session per VU, for the whole run

export default function () {
  if (sid === undefined) {
    sid = openSession(URL, BEARER, PV);
    if (sid === undefined) { errors.add(1); return; }
    // Sessions that think start at random points of one think time, not all at once.
    if (THINK_MS > 0) sleep(Math.random() * THINK_MS / 1000);
  }
  const call = http.post(URL, JSON.stringify({
    jsonrpc: '2.0', id: 3, method: 'tools/call', params: { name: TOOL, arguments: TOOL_ARGS },
  }), { headers: headers(sid, BEARER, PV), tags: { mcp: 'tools/call' } });
  callMs.add(call.timings.duration);
  const msg = call.status === 200 ? rpcResult(call, 3) : null;
  if (!check(call, { 'tools/call ok': () => !!(msg && msg.result && !msg.result.isError) })) errors.add(1);
  if (THINK_MS > 0) sleep(THINK_MS / 1000);
}
