//! `UpstreamResult`: what an upstream answered to a request, decoded or, for a plain `tools/call`
//! result on the direct path, still the upstream's own JSON.
//!
//! A tool result is most of what flows through the gateway, and muster has no business with its
//! content. Decoding it into rmcp's types means trying `ServerResult`'s untagged variants one by
//! one, and the agent's reply then encodes it again. So a result of the 2025 shape (a `content`
//! array, `structuredContent` absent or an object, `isError` absent or a boolean, no `resultType`
//! key at all) is read only as far as `isError` and passed on as it came. Anything else (tasks, input requests, 2026-07-28 shapes) is decoded,
//! so rmcp's adaptations for older agents still apply to it.

use rmcp::model::{CallToolResponse, CallToolResult, ResultType, ServerResult};
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

/// What an upstream answered.
#[derive(Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "ServerResult is passed unboxed as before; boxing it costs the decoded paths an allocation"
)]
pub enum UpstreamResult {
    Result(ServerResult),
    ToolResult(RawToolResult),
}

/// A `tools/call` result in the 2025 shape, as the upstream encoded it.
#[derive(Debug)]
pub struct RawToolResult {
    json: Box<RawValue>,
    is_error: bool,
}

impl RawToolResult {
    /// `Some` when `json` is a plain tool result, which every agent revision reads as it is.
    pub fn from_upstream(json: &RawValue) -> Option<Self> {
        let shape: Shape = serde_json::from_str(json.get()).ok()?;
        let plain = shape.result_type == Kind::Absent
            && shape.content == Kind::Array
            && matches!(shape.structured_content, Kind::Absent | Kind::Object);
        plain.then(|| Self { json: json.to_owned(), is_error: shape.is_error == Some(true) })
    }

    /// Whether `json` says it is a complete result (`resultType: "complete"`, as 2026-07-28
    /// upstreams mark every result): then it is decoded as a tool result by that type alone,
    /// rather than by trying each of `ServerResult`'s shapes.
    pub fn says_complete(json: &RawValue) -> bool {
        #[derive(serde::Deserialize)]
        struct Marked<'a> {
            #[serde(rename = "resultType", borrow)]
            result_type: Option<std::borrow::Cow<'a, str>>,
        }
        serde_json::from_str::<Marked<'_>>(json.get())
            .is_ok_and(|m| m.result_type.as_deref() == Some(ResultType::COMPLETE.as_str()))
    }

    pub fn is_error(&self) -> bool {
        self.is_error
    }

    pub fn json(&self) -> &RawValue {
        &self.json
    }

    /// rmcp's type, for the paths that need one (rmcp's sessionless requests, the `call_tool`
    /// meta-tool). Marked complete, as every decoded result is (`backend::mark_complete`).
    pub fn decode(&self) -> Result<CallToolResult, serde_json::Error> {
        let mut result: CallToolResult = serde_json::from_str(self.json.get())?;
        result.result_type.get_or_insert(ResultType::COMPLETE);
        Ok(result)
    }
}

impl UpstreamResult {
    /// Whether this is a tool result that reports a failure (`isError: true`).
    pub fn is_tool_error(&self) -> bool {
        match self {
            Self::ToolResult(raw) => raw.is_error,
            Self::Result(ServerResult::CallToolResult(result)) => result.is_error == Some(true),
            Self::Result(_) => false,
        }
    }

    /// The answer as rmcp's `ServerResult`, decoding a raw tool result.
    pub fn into_result(self) -> Result<ServerResult, serde_json::Error> {
        match self {
            Self::Result(result) => Ok(result),
            Self::ToolResult(raw) => raw.decode().map(ServerResult::CallToolResult),
        }
    }

    /// The answer to a `tools/call` as rmcp's `CallToolResponse`; `None` for another kind of
    /// result (or a raw one that does not decode).
    pub fn into_call_tool_response(self) -> Option<CallToolResponse> {
        match self.into_result().ok()? {
            ServerResult::CallToolResult(result) => Some(CallToolResponse::Complete(result)),
            ServerResult::InputRequiredResult(result) => Some(CallToolResponse::InputRequired(result)),
            ServerResult::CreateTaskResult(result) => Some(CallToolResponse::Task(result)),
            _ => None,
        }
    }
}

impl From<CallToolResult> for UpstreamResult {
    fn from(result: CallToolResult) -> Self {
        Self::Result(ServerResult::CallToolResult(result))
    }
}

impl From<CallToolResponse> for UpstreamResult {
    fn from(response: CallToolResponse) -> Self {
        Self::Result(ServerResult::from(response))
    }
}

/// The fields of a result that say whether it can be passed on as it is; the rest is skipped.
#[derive(serde::Deserialize)]
struct Shape {
    #[serde(rename = "resultType", default)]
    result_type: Kind,
    #[serde(default)]
    content: Kind,
    #[serde(rename = "structuredContent", default)]
    structured_content: Kind,
    #[serde(rename = "isError")]
    is_error: Option<bool>,
}

/// What kind of JSON value a field holds (`Absent` when the key is missing; `null` is `Other`).
#[derive(Default, PartialEq, Eq)]
enum Kind {
    #[default]
    Absent,
    Object,
    Array,
    Other,
}

impl<'de> serde::Deserialize<'de> for Kind {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Of;
        impl<'de> Visitor<'de> for Of {
            type Value = Kind;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Kind, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Kind::Object)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Kind, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Kind::Array)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Kind, E> {
                Ok(Kind::Other)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Kind, E> {
                Ok(Kind::Other)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Kind, E> {
                Ok(Kind::Other)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Kind, E> {
                Ok(Kind::Other)
            }
            fn visit_str<E>(self, _: &str) -> Result<Kind, E> {
                Ok(Kind::Other)
            }
            fn visit_unit<E>(self) -> Result<Kind, E> {
                Ok(Kind::Other)
            }
        }
        deserializer.deserialize_any(Of)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(json: &str) -> Option<RawToolResult> {
        RawToolResult::from_upstream(&RawValue::from_string(json.to_owned()).expect("valid JSON"))
    }

    #[test]
    fn a_plain_tool_result_passes_as_it_came() {
        let json = r#"{"content":[{"type":"text","text":"hi \u00e9"}],"isError":true,"_meta":{"x":1}}"#;
        let passed = raw(json).expect("plain");
        assert_eq!(passed.json().get(), json, "byte for byte");
        assert!(passed.is_error());
        assert!(UpstreamResult::ToolResult(passed).is_tool_error());
        let structured = raw(r#"{"content":[],"structuredContent":{"pods":[1,2]}}"#).expect("object structuredContent");
        assert!(!structured.is_error());
    }

    #[test]
    fn other_shapes_are_decoded_instead() {
        for json in [
            r#"{"content":[],"resultType":"complete"}"#,
            r#"{"resultType":"input_required","inputRequests":{}}"#,
            r#"{"content":[],"structuredContent":[1,2]}"#,
            r#"{"content":[],"structuredContent":null}"#,
            r#"{"content":[],"structuredContent":"text"}"#,
            r#"{"task":{"taskId":"t1"}}"#,
            r#"{}"#,
            r#"{"content":[],"isError":"yes"}"#,
            // 2025 agents need `content` (rmcp fills in `[]`), and no `resultType` key at all.
            r#"{"structuredContent":{"a":1}}"#,
            r#"{"isError":true}"#,
            r#"{"content":null}"#,
            r#"{"content":[],"resultType":null}"#,
        ] {
            assert!(raw(json).is_none(), "{json} must not pass raw");
        }
    }

    #[test]
    fn a_result_marked_complete_is_told_from_the_others() {
        let says = |json: &str| RawToolResult::says_complete(&RawValue::from_string(json.to_owned()).expect("JSON"));
        assert!(says(r#"{"content":[],"resultType":"complete"}"#));
        assert!(says(r#"{"resultType":"compl\u0065te","content":[]}"#), "escaped, still complete");
        assert!(!says(r#"{"resultType":"input_required","inputRequests":{}}"#));
        assert!(!says(r#"{"content":[]}"#));
        assert!(!says(r#"{"content":[],"resultType":7}"#));
    }

    #[test]
    fn a_raw_result_decodes_to_what_rmcp_would_have_read() {
        let json = r#"{"content":[{"type":"text","text":"ok"}],"isError":false}"#;
        let decoded = raw(json).expect("plain").decode().expect("decodes");
        let mut direct: CallToolResult = serde_json::from_str(json).expect("rmcp reads it");
        direct.result_type = Some(ResultType::COMPLETE);
        assert_eq!(decoded, direct, "what rmcp reads, marked complete for 2026-07-28 agents");
        let answer = UpstreamResult::ToolResult(raw(json).expect("plain"));
        assert!(matches!(answer.into_call_tool_response(), Some(CallToolResponse::Complete(r)) if r == direct));
    }
}
