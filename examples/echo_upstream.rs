//! A fast MCP upstream for load tests: one `echo` tool, streamable HTTP on 127.0.0.1.
//!
//!     cargo run --release --example echo_upstream -- 18200
//!
//! Served by rmcp's `StreamableHttpService` through muster's own actix bridge, so a load test
//! against it directly and through muster measures muster's overhead and nothing else.

#![allow(clippy::print_stdout, clippy::expect_used, reason = "a load-test fixture binary")]

use std::sync::Arc;

use actix_web::{App, HttpRequest, HttpServer, web};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ListToolsResult, PaginatedRequestParams,
    ServerConfig, Tool,
};
use rmcp::service::{RequestContext, RoleServer};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, ServerHandler};

#[derive(Clone)]
struct Echo;

impl ServerHandler for Echo {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(serde_json::from_value(serde_json::json!({"tools": {}})).expect("caps"))
    }

    async fn list_tools(
        &self,
        _: Option<PaginatedRequestParams>,
        _: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let schema = serde_json::json!({"type": "object", "properties": {"text": {"type": "string"}}});
        let tool = Tool::new("echo", "Echoes its text", Arc::new(serde_json::from_value(schema).expect("schema")));
        Ok(ListToolsResult::with_all_items(vec![tool]))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let text = request
            .arguments
            .as_ref()
            .and_then(|a| a.get("text"))
            .and_then(|t| t.as_str())
            .unwrap_or_default()
            .to_owned();
        Ok(CallToolResult::success(vec![ContentBlock::text(text)]).into())
    }
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let port: u16 = std::env::args().nth(1).and_then(|p| p.parse().ok()).unwrap_or(18200);
    // `ECHO_DELAY_MS`: every HTTP request is answered after this delay (a slow or distant upstream).
    let delay =
        std::time::Duration::from_millis(std::env::var("ECHO_DELAY_MS").ok().and_then(|d| d.parse().ok()).unwrap_or(0));
    // `ECHO_ERA=2025`: refuse `server/discover` (HTTP 400), so muster falls back to `initialize`
    // and speaks 2025-11-25 with a session, as to an upstream of that era.
    let era_2025 = std::env::var("ECHO_ERA").is_ok_and(|era| era == "2025");
    let service = web::Data::new(StreamableHttpService::new(
        || Ok(Echo),
        Arc::new(LocalSessionManager::default()),
        StreamableHttpServerConfig::default().disable_allowed_hosts(),
    ));
    println!("echo upstream on http://127.0.0.1:{port}/mcp");
    HttpServer::new(move || {
        App::new().app_data(service.clone()).route(
            "/mcp",
            web::route().to(
                move |req: HttpRequest,
                      body: web::Bytes,
                      svc: web::Data<StreamableHttpService<Echo, LocalSessionManager>>| async move {
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    if era_2025 && body.windows(15).any(|w| w == b"server/discover") {
                        return actix_web::HttpResponse::BadRequest().finish();
                    }
                    muster::frontend::bridge(&svc, &req, body).await
                },
            ),
        )
    })
    .on_connect(muster::frontend::set_nodelay)
    .bind(("127.0.0.1", port))?
    .run()
    .await
}
