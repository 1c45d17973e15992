//! Unit tests of the rounds: a question becomes an `InputRequiredResult`, the retry's answer
//! reaches the call, and a state that is altered, spent, another user's or another tool's is refused.

use rmcp::model::{CallToolResult, ContentBlock, ErrorCode};
use serde_json::json;

use super::*;

fn request(owner: &str, declared: serde_json::Value) -> Request {
    Request {
        owner: owner.to_owned(),
        subject: "ask_name".to_owned(),
        declared: serde_json::from_value(declared).ok(),
        server: "upstream".to_owned(),
        request_state: None,
        input_responses: None,
    }
}

fn retry(first: &Request, state: &str, responses: serde_json::Value) -> Request {
    Request {
        owner: first.owner.clone(),
        subject: first.subject.clone(),
        declared: first.declared.clone(),
        server: first.server.clone(),
        request_state: Some(state.to_owned()),
        input_responses: serde_json::from_value(responses).ok(),
    }
}

fn elicitation() -> ServerRequest {
    serde_json::from_value(json!({
        "method": "elicitation/create",
        "params": {"message": "What is your name?", "requestedSchema": {"type": "object", "properties": {"name": {"type": "string"}}}}
    }))
    .expect("an elicitation request")
}

/// A call that asks for a name and answers with it, or fails when refused.
async fn ask_name(
    _: Resume,
    questions: mpsc::Sender<Question>,
    _: CancellationToken,
) -> Result<UpstreamResult, ErrorData> {
    let (answer, answered) = oneshot::channel();
    let _ = questions.send(Question { request: elicitation(), answer }).await;
    let result = match answered.await {
        Ok(Ok(ClientResult::ElicitResult(result))) => {
            let name = result.content.and_then(|c| c.get("name").cloned()).unwrap_or_default();
            CallToolResult::success(vec![ContentBlock::text(format!("Hello, {}!", name.as_str().unwrap_or("?")))])
        }
        _ => CallToolResult::error(vec![ContentBlock::text("refused")]),
    };
    Ok(result.into())
}

fn text_of(outcome: Outcome) -> String {
    let Outcome::Complete(result) = outcome else { panic!("a complete result") };
    let Some(rmcp::model::CallToolResponse::Complete(result)) = (*result).into_call_tool_response() else {
        panic!("a tool result")
    };
    result.content[0].as_text().map(|t| t.text.clone()).unwrap_or_default()
}

fn asked(outcome: Outcome) -> (String, String) {
    let Outcome::InputRequired(result) = outcome else { panic!("input required") };
    let key = result.input_requests.expect("input requests").into_keys().next().expect("one question");
    (key, result.request_state.expect("a state"))
}

#[tokio::test]
async fn a_question_goes_to_the_agent_and_its_answer_completes_the_call() {
    let rounds = Rounds::new(Keyring::new(&[]), Store::local());
    let first = request("alice", json!({"elicitation": {}}));
    let (key, state) =
        asked(rounds.run(request("alice", json!({"elicitation": {}})), ask_name).await.expect("a round"));
    assert_eq!(key, "elicitation-1");
    let answer = json!({ key.clone(): {"action": "accept", "content": {"name": "Alice"}} });
    let done = rounds.run(retry(&first, &state, answer.clone()), ask_name).await.expect("the retry");
    assert_eq!(text_of(done), "Hello, Alice!");
    let replayed = rounds.run(retry(&first, &state, answer), ask_name).await;
    assert_eq!(replayed.err().map(|e| e.code), Some(ErrorCode::INVALID_PARAMS), "a state is good for one retry");
}

#[tokio::test]
async fn an_unanswered_question_is_asked_again_under_a_new_state() {
    let rounds = Rounds::new(Keyring::new(&[]), Store::local());
    let first = request("", json!({"elicitation": {}}));
    let (key, state) = asked(rounds.run(request("", json!({"elicitation": {}})), ask_name).await.expect("a round"));
    let (again, next) = asked(rounds.run(retry(&first, &state, json!({"wrong": {}})), ask_name).await.expect("again"));
    assert_eq!(again, key, "the same question, still open");
    assert_ne!(next, state, "a new state for the new round");
    let stale = rounds.run(retry(&first, &state, json!({ key.clone(): {"action": "decline"} })), ask_name).await;
    assert!(stale.is_err(), "the first state is spent");
    let done =
        rounds.run(retry(&first, &next, json!({ key: {"action": "accept", "content": {"name": "Bo"}} })), ask_name);
    assert_eq!(text_of(done.await.expect("done")), "Hello, Bo!");
}

#[tokio::test]
async fn a_state_that_is_altered_or_belongs_to_someone_else_is_refused() {
    let rounds = Rounds::new(Keyring::new(&[]), Store::local());
    let first = request("alice", json!({"elicitation": {}}));
    let (key, state) =
        asked(rounds.run(request("alice", json!({"elicitation": {}})), ask_name).await.expect("a round"));
    let answer = json!({ key: {"action": "accept", "content": {"name": "Mallory"}} });
    let mut tampered = state.clone().into_bytes();
    tampered[10] = if tampered[10] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).expect("ascii");
    let mut bob = retry(&first, &state, answer.clone());
    bob.owner = "bob".to_owned();
    let mut other_tool = retry(&first, &state, answer.clone());
    other_tool.subject = "delete_everything".to_owned();
    for refused in [retry(&first, &tampered, answer.clone()), bob, other_tool] {
        let error = rounds.run(refused, ask_name).await.err().expect("refused");
        assert_eq!(error.code, ErrorCode::INVALID_PARAMS);
        assert!(error.message.contains("requestState"), "{}", error.message);
    }
    let done = rounds.run(retry(&first, &state, answer), ask_name).await.expect("the owner's retry still works");
    assert_eq!(text_of(done), "Hello, Mallory!");
}

#[tokio::test]
async fn a_call_that_fails_for_an_undeclared_capability_answers_minus_32021() {
    let rounds = Rounds::new(Keyring::new(&[]), Store::local());
    let error = rounds.run(request("", json!({"sampling": {}})), ask_name).await.err().expect("refused");
    assert_eq!(error.code, ErrorCode::MISSING_REQUIRED_CLIENT_CAPABILITY);
    assert_eq!(error.data.expect("data")["requiredCapabilities"], json!({"elicitation": {}}));
}

#[tokio::test]
async fn calls_that_wait_on_one_server_past_the_cap_cancel_the_oldest() {
    let rounds = Rounds::new(Keyring::new(&[]), Store::local());
    let mut states = Vec::new();
    for _ in 0..=MAX_WAITING_PER_SERVER {
        let first = request("alice", json!({"elicitation": {}}));
        let (key, state) = asked(rounds.run(first, ask_name).await.expect("a round"));
        states.push((key, state));
    }
    // The oldest was cancelled to keep the server's requests for others: its retry is refused;
    // the newest still completes.
    let first = request("alice", json!({"elicitation": {}}));
    let (key, oldest) = &states[0];
    let answer = |key: &str| json!({ key: {"action": "accept", "content": {"name": "Ada"}} });
    let refused = rounds.run(retry(&first, oldest, answer(key)), ask_name).await;
    assert_eq!(refused.err().map(|e| e.code), Some(ErrorCode::INVALID_PARAMS), "the oldest was cancelled");
    let (key, newest) = states.last().expect("a state");
    let done = rounds.run(retry(&first, newest, answer(key)), ask_name).await.expect("the newest completes");
    assert_eq!(text_of(done), "Hello, Ada!");
}

/// A call that asks two questions one after the other, as a 2025 upstream does.
/// It ends as soon as muster cancels it, as an upstream call does.
async fn ask_twice(
    _: Resume,
    questions: mpsc::Sender<Question>,
    ct: CancellationToken,
) -> Result<UpstreamResult, ErrorData> {
    let mut names = Vec::new();
    for _ in 0..2 {
        let (answer, answered) = oneshot::channel();
        let _ = questions.send(Question { request: elicitation(), answer }).await;
        let answered = tokio::select! {
            answered = answered => answered,
            () = ct.cancelled() => return Ok(CallToolResult::error(vec![ContentBlock::text("cancelled")]).into()),
        };
        match answered {
            Ok(Ok(ClientResult::ElicitResult(result))) => {
                let name = result.content.and_then(|c| c.get("name").cloned()).unwrap_or_default();
                names.push(name.as_str().unwrap_or("?").to_owned());
            }
            _ => return Ok(CallToolResult::error(vec![ContentBlock::text("refused")]).into()),
        }
    }
    Ok(CallToolResult::success(vec![ContentBlock::text(format!("{} and {}", names[0], names[1]))]).into())
}

#[tokio::test]
async fn a_call_that_asks_in_three_rounds_stays_open_between_them() {
    let rounds = Rounds::new(Keyring::new(&[]), Store::local());
    let first = request("", json!({"elicitation": {}}));
    let (key, state) = asked(rounds.run(request("", json!({"elicitation": {}})), ask_twice).await.expect("round 1"));
    let answer = |name: &str| json!({ key.clone(): {"action": "accept", "content": {"name": name}} });
    let (second, state) = asked(rounds.run(retry(&first, &state, answer("Ada")), ask_twice).await.expect("round 2"));
    // moka tells its listener of removals on its next maintenance: run it now.
    rounds.calls.run_pending_tasks();
    let answer = json!({ second: {"action": "accept", "content": {"name": "Bo"}} });
    let done = rounds.run(retry(&first, &state, answer), ask_twice).await.expect("round 3");
    assert_eq!(text_of(done), "Ada and Bo", "putting the call back for round 3 did not cancel it");
}

/// A 2026-07-28 upstream: it answers `input_required` with its own key and state, and completes
/// when the retry brings both back.
async fn upstream_asks(
    resume: Resume,
    _: mpsc::Sender<Question>,
    _: CancellationToken,
) -> Result<UpstreamResult, ErrorData> {
    let Some(responses) = resume.input_responses else {
        let question: InputRequest =
            serde_json::from_value(serde_json::to_value(elicitation()).expect("json")).expect("an input request");
        let asked = InputRequiredResult::new(Some([("user_name".to_owned(), question)].into()), Some("up-1".into()));
        return Ok(UpstreamResult::Result(ServerResult::InputRequiredResult(asked)));
    };
    let name = responses["user_name"]["content"]["name"].as_str().unwrap_or("?").to_owned();
    let state = resume.request_state.unwrap_or_default();
    Ok(CallToolResult::success(vec![ContentBlock::text(format!("Hello, {name} ({state})"))]).into())
}

#[tokio::test]
async fn an_upstreams_own_round_reaches_the_agent_under_its_keys_with_its_state_sealed() {
    let rounds = Rounds::new(Keyring::new(&[]), Store::local());
    let first = request("alice", json!({"elicitation": {}}));
    let (key, state) =
        asked(rounds.run(request("alice", json!({"elicitation": {}})), upstream_asks).await.expect("a round"));
    assert_eq!(key, "user_name", "the upstream's own key");
    assert_ne!(state, "up-1", "the upstream's state does not reach the agent as it is");
    let answer = json!({ "user_name": {"action": "accept", "content": {"name": "Ada"}} });
    let mut bob = retry(&first, &state, answer.clone());
    bob.owner = "bob".to_owned();
    let mut tampered = state.clone().into_bytes();
    tampered[12] = if tampered[12] == b'A' { b'B' } else { b'A' };
    let tampered = retry(&first, &String::from_utf8(tampered).expect("ascii"), answer.clone());
    for refused in [bob, tampered] {
        let error = rounds.run(refused, upstream_asks).await.err().expect("refused");
        assert_eq!(error.code, ErrorCode::INVALID_PARAMS);
    }
    let done = rounds.run(retry(&first, &state, answer), upstream_asks).await.expect("the retry");
    assert_eq!(text_of(done), "Hello, Ada (up-1)", "the upstream got its own state back");
    let undeclared = rounds.run(request("alice", json!({"sampling": {}})), upstream_asks).await.err().expect("-32021");
    assert_eq!(undeclared.code, ErrorCode::MISSING_REQUIRED_CLIENT_CAPABILITY);
}

/// A 2026-07-28 upstream: asks for confirmation (its own state "upstream-state"), then, on the
/// retry that carries that state, answers with what it was sent.
async fn confirm_delete(
    resume: Resume,
    _: mpsc::Sender<Question>,
    _: CancellationToken,
) -> Result<UpstreamResult, ErrorData> {
    let Some(state) = resume.request_state else {
        let ServerRequest::ElicitRequest(asking) = elicitation() else { unreachable!("an elicitation") };
        let requests = BTreeMap::from([("confirm".to_owned(), InputRequest::Elicitation(asking))]);
        let asked = InputRequiredResult::new(Some(requests), Some("upstream-state".to_owned()));
        return Ok(UpstreamResult::Result(ServerResult::InputRequiredResult(asked)));
    };
    let answered = resume.input_responses.is_some_and(|r| r.contains_key("confirm"));
    Ok(CallToolResult::success(vec![ContentBlock::text(format!("deleted ({state}, answered: {answered})"))]).into())
}

#[tokio::test]
async fn a_relayed_upstream_state_is_good_for_one_retry_on_any_replica() {
    // Two replicas: the same session keys, one store.
    let (store, key) = (Store::local(), [7; 32]);
    let (here, there) = (Rounds::new(Keyring::new(&[key]), store.clone()), Rounds::new(Keyring::new(&[key]), store));
    let first = request("alice", json!({"elicitation": {}}));
    let (key, state) =
        asked(here.run(request("alice", json!({"elicitation": {}})), confirm_delete).await.expect("asked"));
    assert_eq!(key, "confirm", "the upstream's own key");
    assert!(!state.contains("upstream-state"), "the upstream's state travels sealed");
    let answer = json!({ "confirm": {"action": "accept", "content": {"confirm": true}} });
    let mut other_member = retry(&first, &state, answer.clone());
    other_member.server = "kubernetes-cluster-b".to_owned();
    let error = there.run(other_member, confirm_delete).await.err().expect("another member's retry is refused");
    assert_eq!(error.code, ErrorCode::INVALID_PARAMS);
    let done =
        there.run(retry(&first, &state, answer.clone()), confirm_delete).await.expect("another replica continues");
    assert_eq!(text_of(done), "deleted (upstream-state, answered: true)");
    for rounds in [&here, &there] {
        let replayed = rounds.run(retry(&first, &state, answer.clone()), confirm_delete).await;
        let error = replayed.err().expect("a replayed confirmation is refused");
        assert_eq!(error.code, ErrorCode::INVALID_PARAMS);
        assert!(error.message.contains("used before"), "{}", error.message);
    }
}
