//! Real third-party peers: kubernetes-mcp-server (npm) as a `kubernetes` family over streamable
//! HTTP and over stdio, and a Python `mcp` SDK server, driven by the Python SDK's client.
