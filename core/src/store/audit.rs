//! The audit trail: who did what to which chart, when (45 CFR 164.312(b)). Rows are inserted
//! and never changed; a write's row is inserted in the same transaction as the write, with the
//! hashes of the changes it committed, so the trail and the charts cannot disagree.

use serde::{Deserialize, Serialize};

use crate::chart::{ChartId, Timestamp};

/// Who is acting, as the server knows them (from the bearer token and the connection).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub user: String,
    /// The role token.
    pub role: String,
    /// The device's peer id, or the client of a request.
    pub device: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditAction {
    /// A chart was read (synced down, or viewed).
    Read,
    /// A listing of charts was read (a census).
    List,
    /// Changes to a chart were accepted.
    Write,
    /// A chart new to the store was accepted.
    Create,
    /// Access was refused.
    Deny,
    /// Changes were refused by the chart's rules.
    Reject,
    /// Changes were kept in the holding area for review.
    Hold,
    /// A records supervisor accepted or rejected held changes.
    Review,
    /// The staff directory or the enrolled devices changed, or a credential was revoked.
    Admin,
    /// A certificate was issued to a person on a device (an online sign-in).
    SignIn,
    /// Break-glass access to a chart outside the person's wards began or ended.
    BreakGlass,
}

impl AuditAction {
    pub fn token(self) -> &'static str {
        match self {
            AuditAction::Read => "read",
            AuditAction::List => "list",
            AuditAction::Write => "write",
            AuditAction::Create => "create",
            AuditAction::Deny => "deny",
            AuditAction::Reject => "reject",
            AuditAction::Hold => "hold",
            AuditAction::Review => "review",
            AuditAction::Admin => "admin",
            AuditAction::SignIn => "sign_in",
            AuditAction::BreakGlass => "break_glass",
        }
    }

    pub(crate) fn from_token(s: &str) -> Option<AuditAction> {
        [
            AuditAction::Read,
            AuditAction::List,
            AuditAction::Write,
            AuditAction::Create,
            AuditAction::Deny,
            AuditAction::Reject,
            AuditAction::Hold,
            AuditAction::Review,
            AuditAction::Admin,
            AuditAction::SignIn,
            AuditAction::BreakGlass,
        ]
        .into_iter()
        .find(|a| a.token() == s)
    }
}

/// One row of the trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub seq: i64,
    pub at: Timestamp,
    #[serde(flatten)]
    pub actor: Actor,
    pub action: AuditAction,
    pub chart: Option<ChartId>,
    /// Hex change hashes, for writes and creations.
    pub changes: Vec<String>,
    /// Ids and reasons only.
    pub detail: Option<String>,
}
