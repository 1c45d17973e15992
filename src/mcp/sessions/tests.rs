//! Unit tests of the agent-session store.

use super::*;
use rmcp::model::ClientResult;

#[test]
fn replies_reach_only_the_request_that_asked() {
    let sessions = Sessions::default();
    let (_, session) = sessions.open(None).expect("open");
    let (first, mut first_rx) = session.expect_reply();
    let (second, mut second_rx) = session.expect_reply();
    assert_ne!(first, second);
    assert!(session.deliver_reply(&second, Ok(ClientResult::empty(()))).is_ok());
    assert!(second_rx.try_recv().is_ok());
    assert!(first_rx.try_recv().is_err(), "the first request is still waiting");
    assert!(session.deliver_reply(&second, Ok(ClientResult::empty(()))).is_err(), "an id is answered once");
}

#[test]
fn cancel_and_close_cancel_requests_in_flight() {
    let sessions = Sessions::default();
    let (id, session) = sessions.open(Some("user".into())).expect("open");
    let (a, b) = (CancellationToken::new(), CancellationToken::new());
    let _a = session.begin(RequestId::Number(1), a.clone());
    let _b = session.begin(RequestId::Number(2), b.clone());
    session.cancel(&RequestId::Number(1));
    assert!(a.is_cancelled() && !b.is_cancelled());
    assert!(sessions.close(&id));
    assert!(b.is_cancelled());
    assert!(sessions.get(&id).is_none());
    assert!(!sessions.close(&id));
}

#[tokio::test]
async fn an_ended_session_stops_every_wait_and_request() {
    let sessions = Sessions::new(Duration::from_millis(50), Limits::default());
    let (id, session) = sessions.open(None).expect("open");
    let (_, mut answer) = session.expect_reply();
    sessions.close(&id);
    assert!(answer.try_recv().is_err(), "nobody is left to answer");
    assert!(session.pending.lock().is_ok_and(|p| p.is_empty()));

    let (_, idle) = sessions.open(None).expect("open");
    let running = CancellationToken::new();
    let _running = idle.begin(RequestId::Number(7), running.clone());
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert_eq!(sessions.len(), 0, "the idle session expired");
    assert!(running.is_cancelled(), "its request was cancelled when it expired");
}

#[test]
fn a_reused_request_id_keeps_the_newer_request_cancellable() {
    let sessions = Sessions::default();
    let (_, session) = sessions.open(None).expect("open");
    let (old, new) = (CancellationToken::new(), CancellationToken::new());
    let first = session.begin(RequestId::Number(1), old);
    let _second = session.begin(RequestId::Number(1), new.clone());
    drop(first);
    session.cancel(&RequestId::Number(1));
    assert!(new.is_cancelled());
}

#[test]
fn one_user_cannot_hold_more_sessions_than_allowed() {
    let sessions = Sessions::new(IDLE_TIMEOUT, Limits { max_sessions: 3, max_sessions_per_user: 2 });
    let alice = || Some("alice".to_owned());
    let (first, _) = sessions.open(alice()).expect("first");
    sessions.open(alice()).expect("second");
    assert_eq!(sessions.open(alice()).err(), Some(Refused::UserLimit { limit: 2 }));
    sessions.open(Some("bob".into())).expect("another user still gets one");
    assert_eq!(sessions.open(None).err(), Some(Refused::TotalLimit { limit: 3 }));
    assert!(sessions.close(&first));
    sessions.open(alice()).expect("a closed session frees its place");
}

#[test]
fn an_agent_that_does_not_read_loses_its_standalone_stream() {
    let sessions = Sessions::default();
    let (_, session) = sessions.open(None).expect("open");
    let mut rx = session.open_standalone();
    for _ in 0..=STANDALONE_QUEUE {
        session.notify(ServerNotification::ToolListChangedNotification(Default::default()));
    }
    assert!(!session.has_standalone(), "the stream was closed, not grown");
    let mut queued = 0;
    while rx.try_recv().is_ok() {
        queued += 1;
    }
    assert_eq!(queued, STANDALONE_QUEUE, "what was queued is still delivered, then the stream ends");
}

#[test]
fn notifications_reach_only_an_open_standalone_stream() {
    let sessions = Sessions::default();
    let (_, session) = sessions.open(None).expect("open");
    session.notify(ServerNotification::ToolListChangedNotification(Default::default()));
    assert!(sessions.listening().is_empty());
    let mut rx = session.open_standalone();
    assert_eq!(sessions.listening().len(), 1);
    session.notify(ServerNotification::ToolListChangedNotification(Default::default()));
    assert!(rx.try_recv().is_ok());
    drop(rx);
    assert!(sessions.listening().is_empty());
}
