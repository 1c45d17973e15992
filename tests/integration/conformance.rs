//! The official MCP conformance suite against muster's `/mcp`.
