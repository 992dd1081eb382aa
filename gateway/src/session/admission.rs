//! Letting a connection in: the replica is not draining, the user is under
//! its connection cap, and the session it asks for (if any) is its own.
//!
//! An [`Admission`] holds the connection's slot in the user's cap. It is
//! made before the transport says yes; if the transport then fails and the
//! admission is dropped without becoming a [`Client`], the slot is given
//! back at once instead of counting until it expires.
//!
//! [`Client`]: crate::session::Client

use crate::fanout::rooms::ClientId;
use crate::session::auth::Identity;
use crate::session::store::{self, ReportedSeq, SessionRecord, SessionStore};
use crate::session::Handles;
use protocol::error_code::ErrorPayload;
use protocol::ErrorCode;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::task::TaskTracker;

/// How long a connection counts against its user's cap without a refresh.
pub const CONNECTION_TTL: Duration = Duration::from_secs(30);

/// A connection that passed authentication and the connection cap, with
/// the session it starts or resumes.
#[derive(Debug)]
pub struct Admission {
    /// The client id it will have.
    pub id: ClientId,
    /// Who it is and what it may see.
    pub identity: Identity,
    /// The session id it starts or resumes.
    pub session: String,
    /// Whether it resumes a stored session.
    pub resume: Resume,
    /// Its place in the user's connection cap.
    pub(super) slot: Slot,
}

/// What became of the session a connection asked to resume.
#[derive(Debug)]
pub enum Resume {
    /// None asked, or one that is unknown, expired or not this user's: a
    /// new session.
    New,
    /// The stored session it resumes.
    Resumed(SessionRecord),
    /// One was asked but the session store did not answer: a new session,
    /// and the client is told so (`UPSTREAM_UNAVAILABLE`) rather than left
    /// to guess why.
    Unanswered,
}

/// A taken place in a user's connection cap, given back on drop unless
/// [`Slot::keep`] handed it to a client (which gives it back when it goes).
pub(super) struct Slot {
    /// Where the cap is counted.
    store: Arc<SessionStore>,
    /// The user whose cap it is.
    user: String,
    /// The connection's key in the cap.
    key: String,
    /// Tracks the release, so a drain waits for it.
    tasks: TaskTracker,
    /// False once a client owns the slot.
    armed: bool,
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot").field("key", &self.key).finish()
    }
}

impl Slot {
    /// A slot that was never taken (for tests that build admissions).
    #[cfg(test)]
    pub(super) fn for_tests(handles: &Handles, id: ClientId) -> Slot {
        Slot {
            store: handles.store.clone(),
            user: String::new(),
            key: handles.registry.slot_key(id),
            tasks: handles.tasks.clone(),
            armed: false,
        }
    }

    /// The client now owns the slot.
    pub(super) fn keep(mut self) {
        self.armed = false;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return; // No runtime left: the entry expires by itself.
        };
        let store = self.store.clone();
        let (user, key) = (
            std::mem::take(&mut self.user),
            std::mem::take(&mut self.key),
        );
        self.tasks.spawn_on(
            async move {
                if let Err(e) = store.release(&user, &key).await {
                    tracing::debug!(error = %e, "connection slot not released; it will expire");
                }
            },
            &runtime,
        );
    }
}

/// Checks the per-user connection cap and looks up a session to resume.
/// A session is resumed only by the user (`sub`) and account it belongs to.
/// If the store is unreachable the connection is let in without resume.
pub async fn admit(
    handles: &Handles,
    identity: Identity,
    requested: Option<&str>,
    reported: ReportedSeq,
) -> Result<Admission, ErrorPayload> {
    let registry = &handles.registry;
    if registry.is_draining() {
        return Err(ErrorPayload::new(
            ErrorCode::UpstreamUnavailable,
            "Server is draining",
            "reconnect to another replica",
        ));
    }
    let id = registry.next_id();
    let key = registry.slot_key(id);
    let cap = handles.limits.connections_per_user;
    let user = identity.user.clone();
    match handles
        .store
        .acquire(&user, &key, cap, CONNECTION_TTL)
        .await
    {
        Ok(true) => {}
        Ok(false) => {
            return Err(ErrorPayload::new(
                ErrorCode::RateLimited,
                "Too many connections",
                format!("at most {cap} concurrent connections per user"),
            ))
        }
        Err(e) => tracing::warn!(error = %e, "connection cap not checked (store unreachable)"),
    }
    let mut admission = Admission {
        id,
        identity,
        session: store::new_id(),
        resume: Resume::New,
        slot: Slot {
            store: handles.store.clone(),
            user,
            key,
            tasks: handles.tasks.clone(),
            armed: true,
        },
    };
    if let Some(id) = requested.filter(|id| store::is_well_formed(id)) {
        match handles.store.load(id).await {
            Ok(Some(mut record))
                if record.user == admission.identity.user
                    && record.account == admission.identity.account.as_str() =>
            {
                record.resume_from(reported);
                admission.session = id.to_owned();
                admission.resume = Resume::Resumed(record);
            }
            Ok(_) => tracing::debug!("session not resumable: unknown, expired or not this user's"),
            Err(e) => {
                tracing::warn!(error = %e, "session not resumable (store unreachable)");
                admission.resume = Resume::Unanswered;
            }
        }
    }
    Ok(admission)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::tests::handles;
    use protocol::Channel;

    fn alice() -> Identity {
        Identity {
            user: "alice".into(),
            account: "demo".parse().unwrap(),
            allowed: Channel::ALL.to_vec(),
            expires_at: i64::MAX,
            jti: None,
            issued_at: None,
        }
    }

    #[tokio::test]
    async fn a_dropped_admission_gives_its_slot_back() {
        let mut h = handles();
        h.limits.connections_per_user = 1;
        let first = admit(&h, alice(), None, ReportedSeq::default())
            .await
            .unwrap();
        let refused = admit(&h, alice(), None, ReportedSeq::default())
            .await
            .unwrap_err();
        assert_eq!(refused.code, ErrorCode::RateLimited);
        drop(first);
        h.tasks.close();
        tokio::time::timeout(Duration::from_secs(5), h.tasks.wait())
            .await
            .expect("the release finishes");
        assert!(
            admit(&h, alice(), None, ReportedSeq::default())
                .await
                .is_ok(),
            "the slot is free again"
        );
    }

    /// Redis down: the connection is let in on a new session, and knows it.
    #[tokio::test]
    async fn a_resume_the_store_cannot_answer_is_a_new_session_and_says_so() {
        let mut h = handles();
        // Nothing listens on port 1; the store connects lazily.
        h.store = Arc::new(SessionStore::redis("redis://127.0.0.1:1", "mt5").unwrap());
        let asked = "0123456789abcdef0123456789abcdef";
        let a = admit(&h, alice(), Some(asked), ReportedSeq::default())
            .await
            .expect("let in without the store");
        assert!(matches!(a.resume, Resume::Unanswered), "{:?}", a.resume);
        assert_ne!(a.session, asked);
        let fresh = admit(&h, alice(), None, ReportedSeq::default())
            .await
            .expect("let in without the store");
        assert!(
            matches!(fresh.resume, Resume::New),
            "nothing was asked to resume"
        );
    }

    #[tokio::test]
    async fn a_draining_replica_admits_nobody() {
        let h = handles();
        h.registry.drain("bye");
        let refused = admit(&h, alice(), None, ReportedSeq::default())
            .await
            .unwrap_err();
        assert_eq!(refused.code, ErrorCode::UpstreamUnavailable);
    }
}
