// JSON-RPC over MCP streamable HTTP for k6: open a session, call tools, parse JSON or SSE replies.
import http from 'k6/http';

export function headers(sid, bearer, pv) {
  const h = { 'Content-Type': 'application/json', Accept: 'application/json, text/event-stream', 'MCP-Protocol-Version': pv };
  if (sid) h['Mcp-Session-Id'] = sid;
  if (bearer) h.Authorization = `Bearer ${bearer}`;
  return h;
}

// The JSON-RPC message with id == wantId, from a JSON body or an SSE body.
export function rpcResult(res, wantId) {
  const ct = String(res.headers['Content-Type'] || '');
  const body = String(res.body || '');
  let msgs = [];
  if (ct.includes('text/event-stream')) {
    for (const ev of body.split(/\r?\n\r?\n/)) {
      const data = ev.split(/\r?\n/).filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trim()).join('\n');
      if (data) { try { msgs.push(JSON.parse(data)); } catch (_) { /* priming event */ } }
    }
  } else if (body) {
    const parsed = JSON.parse(body);
    msgs = Array.isArray(parsed) ? parsed : [parsed];
  }
  return msgs.find((x) => x && x.id === wantId);
}

// initialize + notifications/initialized; returns the session id (null when stateless).
export function openSession(url, bearer, pv) {
  const init = http.post(url, JSON.stringify({
    jsonrpc: '2.0', id: 1, method: 'initialize',
    params: { protocolVersion: pv, capabilities: {}, clientInfo: { name: 'k6', version: '1.0' } },
  }), { headers: headers(null, bearer, pv), tags: { mcp: 'initialize' } });
  if (init.status !== 200) return undefined;
  const sid = init.headers['Mcp-Session-Id'] || init.headers['mcp-session-id'] || null;
  http.post(url, JSON.stringify({ jsonrpc: '2.0', method: 'notifications/initialized' }), { headers: headers(sid, bearer, pv), tags: { mcp: 'initialized' } });
  return sid;
}
