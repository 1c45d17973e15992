//! An rmcp client for driving muster, recording the notifications it receives.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rmcp::model::{CallToolRequestParams, CallToolResult, ClientConfig, ProgressNotificationParam};
use rmcp::service::{NotificationContext, RoleClient, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::{ClientHandler, ServiceExt as _};
use serde_json::Value;

/// One progress notification: progress, total, message.
pub type ProgressNote = (f64, Option<f64>, Option<String>);

#[derive(Default)]
pub struct Seen {
    pub tools_changed: AtomicUsize,
    pub progress: std::sync::Mutex<Vec<f64>>,
    /// Every progress notification whole.
    pub progress_notes: std::sync::Mutex<Vec<ProgressNote>>,
}

#[derive(Clone, Default)]
pub struct Recorder(pub Arc<Seen>);

impl ClientHandler for Recorder {
    fn get_info(&self) -> ClientConfig {
        ClientConfig::default()
    }

    async fn on_tool_list_changed(&self, _: NotificationContext<RoleClient>) {
        self.0.tools_changed.fetch_add(1, Ordering::SeqCst);
    }

    async fn on_progress(&self, params: ProgressNotificationParam, _: NotificationContext<RoleClient>) {
        self.0.progress.lock().expect("lock").push(params.progress);
        self.0.progress_notes.lock().expect("lock").push((params.progress, params.total, params.message));
    }
}

pub struct Client {
    pub service: RunningService<RoleClient, Recorder>,
    pub seen: Arc<Seen>,
}

impl Client {
    pub async fn connect(url: &str) -> Self {
        let recorder = Recorder::default();
        let seen = recorder.0.clone();
        let transport = StreamableHttpClientTransport::from_uri(url.to_owned());
        let service = recorder.serve(transport).await.expect("connect to muster");
        Self { service, seen }
    }

    pub async fn tool_names(&self) -> Vec<String> {
        let tools = self.service.peer().list_all_tools().await.expect("tools/list");
        tools.into_iter().map(|t| t.name.to_string()).collect()
    }

    pub async fn call(&self, name: &str, args: Value) -> CallToolResult {
        let mut params = CallToolRequestParams::new(name.to_owned());
        params.arguments = args.as_object().cloned();
        self.service.peer().call_tool(params).await.expect("tools/call")
    }

    /// Starts a `tools/call` the test may cancel (`handle.cancel(reason)`) before it answers.
    pub async fn start_call(&self, name: &str, args: Value) -> rmcp::service::RequestHandle<RoleClient> {
        let mut params = CallToolRequestParams::new(name.to_owned());
        params.arguments = args.as_object().cloned();
        let request = rmcp::model::ClientRequest::CallToolRequest(rmcp::model::CallToolRequest::new(params));
        self.service
            .peer()
            .send_cancellable_request(request, rmcp::service::PeerRequestOptions::no_options())
            .await
            .expect("send")
    }
}

/// The concatenated text of a tool result.
pub fn text(result: &CallToolResult) -> String {
    result.content.iter().filter_map(|c| c.as_text().map(|t| t.text.clone())).collect::<Vec<_>>().join("")
}
