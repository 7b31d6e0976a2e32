//! What the server tells a device about one chart's changes, beside automerge's sync: that
//! they are held for review (and why), that a records supervisor accepted or rejected them,
//! or that the holding area is full. automerge-repo has no refusals at all, so these travel
//! in the one message every automerge-repo 2.x peer already accepts for any document: an
//! `ephemeral` message, whose `data` is a CBOR map with a `type` of `chartsync/…`. An
//! automerge-repo app sees it as the document handle's `ephemeral-message` event and carries
//! on; our device client holds the chart (docs/protocol.md, "Outcomes per chart").
//!
//! A notice carries ids, typed reasons and a summary in paths and ids: never chart content.

use minicbor::data::Type;
use minicbor::{Decoder, Encoder};

use crate::chart::Timestamp;

/// Why the server holds a chart's changes for review instead of merging them.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "uniffi", derive(uniffi::Enum))]
pub enum HoldReason {
    /// The chart is on a ward the signed-in person's access does not cover (it was
    /// transferred, and the change was made after the writer could have seen that, or
    /// outside the window).
    OutsideWards,
    /// The signed-in person's role does not write that part of the chart, or a record names
    /// someone else as its writer.
    RoleMayNotWrite,
    /// The changes were made by someone other than the person signed in on the connection
    /// (a shared tablet).
    AnotherAuthor,
    /// The changes edit an entry or form after it was signed.
    EditsSignedRecord,
    /// A code the server's code tables do not know for the encounter's date.
    InvalidCode,
    /// The changes break the chart's structure (an append-only list, an immutable field, the
    /// schema).
    BreaksChartRules,
    /// The changes build on changes already held for review.
    DependsOnHeld,
    /// Ward censuses are written by the server only.
    CensusIsReadOnly,
    /// New clinical entries written by ward staff after they could have seen the discharge,
    /// or past the window after it.
    AfterDischarge,
    /// An enrolled tablet sent a change with no proof of who made it.
    Unsigned,
    /// The proof names a certificate this server cannot confirm it issued.
    UnknownCertificate,
    /// The proof's signature does not verify: the change is not what its author signed.
    BadSignature,
    /// The change claims an author other than the person whose key signed it.
    ForgedAuthor,
    /// The signing key belongs to another tablet than the one that sent the change.
    AnotherDevice,
    /// The change was made, or arrived, outside its certificate's validity.
    CertificateExpired,
    /// The person, certificate or tablet was revoked.
    Revoked,
    /// A change made on the tablet is larger than the server accepts (its bound on what one
    /// change may inflate to). Held on the tablet only: the server never took it.
    TooLarge,
}

impl HoldReason {
    pub const ALL: [HoldReason; 17] = [
        HoldReason::OutsideWards,
        HoldReason::RoleMayNotWrite,
        HoldReason::AnotherAuthor,
        HoldReason::EditsSignedRecord,
        HoldReason::InvalidCode,
        HoldReason::BreaksChartRules,
        HoldReason::DependsOnHeld,
        HoldReason::CensusIsReadOnly,
        HoldReason::AfterDischarge,
        HoldReason::Unsigned,
        HoldReason::UnknownCertificate,
        HoldReason::BadSignature,
        HoldReason::ForgedAuthor,
        HoldReason::AnotherDevice,
        HoldReason::CertificateExpired,
        HoldReason::Revoked,
        HoldReason::TooLarge,
    ];

    /// Whether a records supervisor may merge changes held for this reason. Access, authorship
    /// and code tables are matters of policy a person can judge; a role writing outside its
    /// sections, an edit to a signed record or a broken structure would make the record itself
    /// wrong, and are only ever rejected (corrections go in as amendments).
    pub fn acceptable(self) -> bool {
        matches!(
            self,
            HoldReason::OutsideWards
                | HoldReason::AnotherAuthor
                | HoldReason::InvalidCode
                | HoldReason::DependsOnHeld
                | HoldReason::AfterDischarge
                | HoldReason::Unsigned
                | HoldReason::UnknownCertificate
                | HoldReason::AnotherDevice
                | HoldReason::CertificateExpired
                | HoldReason::Revoked
        )
    }

    pub fn token(self) -> &'static str {
        match self {
            HoldReason::OutsideWards => "outside_wards",
            HoldReason::RoleMayNotWrite => "role_may_not_write",
            HoldReason::AnotherAuthor => "another_author",
            HoldReason::EditsSignedRecord => "edits_signed_record",
            HoldReason::InvalidCode => "invalid_code",
            HoldReason::BreaksChartRules => "breaks_chart_rules",
            HoldReason::DependsOnHeld => "depends_on_held",
            HoldReason::CensusIsReadOnly => "census_is_read_only",
            HoldReason::AfterDischarge => "after_discharge",
            HoldReason::Unsigned => "unsigned",
            HoldReason::UnknownCertificate => "unknown_certificate",
            HoldReason::BadSignature => "bad_signature",
            HoldReason::ForgedAuthor => "forged_author",
            HoldReason::AnotherDevice => "another_device",
            HoldReason::CertificateExpired => "certificate_expired",
            HoldReason::Revoked => "revoked",
            HoldReason::TooLarge => "too_large",
        }
    }

    pub fn from_token(s: &str) -> Option<HoldReason> {
        HoldReason::ALL.into_iter().find(|r| r.token() == s)
    }

    /// What a nurse or a records supervisor reads.
    pub fn describe(self) -> &'static str {
        match self {
            HoldReason::OutsideWards => "the chart is on a ward outside your access",
            HoldReason::RoleMayNotWrite => "your role does not write this part of the chart",
            HoldReason::AnotherAuthor => "written by someone other than the person signed in",
            HoldReason::EditsSignedRecord => "edits an entry or form after it was signed",
            HoldReason::InvalidCode => "a code the server does not know for this date",
            HoldReason::BreaksChartRules => "breaks the chart's rules",
            HoldReason::DependsOnHeld => "builds on changes already held for review",
            HoldReason::CensusIsReadOnly => "ward lists are written by the server only",
            HoldReason::AfterDischarge => "written after the patient was discharged",
            HoldReason::Unsigned => "sent by an enrolled tablet without a proof of who wrote it",
            HoldReason::UnknownCertificate => {
                "signed under a certificate this server cannot confirm"
            }
            HoldReason::BadSignature => "the signature does not match the change",
            HoldReason::ForgedAuthor => "names an author other than the person who signed it",
            HoldReason::AnotherDevice => "signed with a key issued for another tablet",
            HoldReason::CertificateExpired => {
                "made or sent outside the signer's certificate validity"
            }
            HoldReason::Revoked => "the signer's access or the tablet was revoked",
            HoldReason::TooLarge => "a change larger than the server accepts",
        }
    }
}

impl std::fmt::Display for HoldReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.token())
    }
}

/// Why a chart left a device's wards.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "uniffi", derive(uniffi::Enum))]
pub enum LeftReason {
    /// The patient was transferred to a ward the signed-in person's access does not cover.
    Transferred,
    /// The patient was discharged; ward staff no longer chart on it.
    Discharged,
    /// The tablet was revoked (lost, stolen, retired, or wiped by an administrator): every
    /// chart leaves it, as soon as the server has or holds what was written on it there.
    Revoked,
}

impl LeftReason {
    pub fn token(self) -> &'static str {
        match self {
            LeftReason::Transferred => "transferred",
            LeftReason::Discharged => "discharged",
            LeftReason::Revoked => "revoked",
        }
    }

    pub fn from_token(s: &str) -> Option<LeftReason> {
        [
            LeftReason::Transferred,
            LeftReason::Discharged,
            LeftReason::Revoked,
        ]
        .into_iter()
        .find(|r| r.token() == s)
    }
}

/// One notice about one chart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChartNotice {
    /// The changes are kept in the server's holding area (as hold `hold`), not merged and not
    /// sent on. The device should stop sending this chart until a decision or a new sign-in.
    Held {
        hold: i64,
        reason: HoldReason,
        summary: String,
    },
    /// A records supervisor merged the held changes into the record.
    Accepted { hold: i64 },
    /// A records supervisor rejected the held changes: they stay in the holding area, with the
    /// decision, and never reach the record.
    Rejected { hold: i64, reason: String },
    /// The holding area has no room for this device's changes: nothing was held, nothing
    /// already held was dropped; the device keeps the changes and tries again later.
    HoldingAreaFull { reason: HoldReason },
    /// The chart left the device's wards. The server has `acknowledged`, the device's heads
    /// it holds: a device whose own heads are all among them has nothing left to send, and
    /// keeps the chart read-only; otherwise it sends what it has first. Nothing of the chart
    /// after it left, not even its new ward, is sent. From `purge_at` on, the device removes
    /// the chart from its store (once nothing written on it there is unacknowledged) and
    /// reports the removal with [`ChartNotice::Purged`]; without it, the chart stays read-only.
    Left {
        reason: LeftReason,
        acknowledged: Vec<automerge::ChangeHash>,
        purge_at: Option<Timestamp>,
    },
    /// From a device: it removed the chart from its store at `at`, holding `heads` (all of
    /// which the server had acknowledged or held), because it left for `reason`.
    Purged {
        reason: LeftReason,
        heads: Vec<automerge::ChangeHash>,
        at: Timestamp,
    },
    /// The server recorded (and audited) the device's report that it removed the chart at
    /// `at`: the device stops reporting that removal.
    PurgeRecorded { at: Timestamp },
    /// To an enrolled tablet, about itself (the document id is its device id): certificates
    /// issued on it that were revoked (serials, hex), and whether the tablet itself was. The
    /// tablet erases those people's sealed keys and signs them out; nothing they wrote is lost.
    Revoked { serials: Vec<String>, device: bool },
    /// Break-glass grants a tablet recorded offline for this chart are filed for review
    /// (their signatures, hex): the tablet stops sending them.
    BreakGlassFiled { signatures: Vec<String> },
    /// The device's last message about this chart carried more than the server accepts in
    /// one message (`bound`, at most `limit`): nothing of it was applied, and the connection
    /// stays up. The device sends it again within the bound (split into more messages);
    /// a single change past it cannot be split, and is held on the device.
    TooLarge { bound: SizeBound, limit: u64 },
    /// From a device: send part `part` of the file `hash` (hex SHA-256) that this chart
    /// names (a scanned document someone opened). Asked one part at a time, so a dropped
    /// connection resumes where it stopped.
    AttachmentWanted { hash: String, part: u32 },
    /// Part `part` of the file `hash`: at most 256 KiB of its bytes.
    AttachmentPart {
        hash: String,
        part: u32,
        data: Vec<u8>,
    },
    /// The file `hash` is not sent: `reason` says why (`not_permitted`: the chart is not on
    /// the device's wards now; `not_found`: the chart names no such file the server has).
    AttachmentUnavailable { hash: String, reason: String },
}

/// Which of the server's bounds on one sync message was passed (RELIABILITY.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeBound {
    /// Changes (or whole documents) in one message.
    Changes,
    /// Bytes one change, or one whole document, inflates to.
    Change,
    /// Bytes all of one message's changes inflate to.
    Message,
}

impl SizeBound {
    /// The bound a refused message's contents passed; `None` for contents that are not
    /// automerge data at all (a malformed message, not a large one).
    pub fn of(error: &super::contents::ContentError) -> Option<SizeBound> {
        use super::contents::ContentError;
        match error {
            ContentError::TooManyChanges { .. } => Some(SizeBound::Changes),
            ContentError::ChangeTooLarge { .. } => Some(SizeBound::Change),
            ContentError::MessageTooLarge { .. } => Some(SizeBound::Message),
            ContentError::Malformed(_) => None,
        }
    }

    pub fn token(self) -> &'static str {
        match self {
            SizeBound::Changes => "changes",
            SizeBound::Change => "change",
            SizeBound::Message => "message",
        }
    }

    pub fn from_token(s: &str) -> Option<SizeBound> {
        [SizeBound::Changes, SizeBound::Change, SizeBound::Message]
            .into_iter()
            .find(|b| b.token() == s)
    }

    /// `bounds` with this bound lowered to `limit` (never raised).
    pub fn lowered(
        self,
        mut bounds: super::contents::ContentBounds,
        limit: u64,
    ) -> super::contents::ContentBounds {
        match self {
            SizeBound::Changes => {
                let limit = usize::try_from(limit).unwrap_or(usize::MAX).max(1);
                bounds.changes_per_message = bounds.changes_per_message.min(limit);
            }
            SizeBound::Change => {
                bounds.inflated_bytes_per_change = bounds.inflated_bytes_per_change.min(limit)
            }
            SizeBound::Message => {
                bounds.inflated_bytes_per_message = bounds.inflated_bytes_per_message.min(limit)
            }
        }
        bounds
    }
}

const HELD: &str = "chartsync/held";
const ACCEPTED: &str = "chartsync/accepted";
const REJECTED: &str = "chartsync/rejected";
const FULL: &str = "chartsync/holding-area-full";
const LEFT: &str = "chartsync/left";
const REVOKED: &str = "chartsync/revoked";
const FILED: &str = "chartsync/break-glass-filed";
const TOO_LARGE: &str = "chartsync/too-large";
const PURGED: &str = "chartsync/purged";
const PURGE_RECORDED: &str = "chartsync/purge-recorded";
const ATTACHMENT_WANTED: &str = "chartsync/attachment-wanted";
const ATTACHMENT_PART: &str = "chartsync/attachment-part";
const ATTACHMENT_UNAVAILABLE: &str = "chartsync/attachment-unavailable";

impl ChartNotice {
    /// The `data` of the ephemeral message: a CBOR map with text keys.
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Encoder::new(Vec::new());
        let written: Result<_, minicbor::encode::Error<std::convert::Infallible>> = (|| {
            match self {
                ChartNotice::Held {
                    hold,
                    reason,
                    summary,
                } => {
                    e.map(4)?;
                    e.str("type")?.str(HELD)?;
                    e.str("hold")?.i64(*hold)?;
                    e.str("reason")?.str(reason.token())?;
                    e.str("summary")?.str(summary)?;
                }
                ChartNotice::Accepted { hold } => {
                    e.map(2)?;
                    e.str("type")?.str(ACCEPTED)?;
                    e.str("hold")?.i64(*hold)?;
                }
                ChartNotice::Rejected { hold, reason } => {
                    e.map(3)?;
                    e.str("type")?.str(REJECTED)?;
                    e.str("hold")?.i64(*hold)?;
                    e.str("reason")?.str(reason)?;
                }
                ChartNotice::HoldingAreaFull { reason } => {
                    e.map(2)?;
                    e.str("type")?.str(FULL)?;
                    e.str("reason")?.str(reason.token())?;
                }
                ChartNotice::Left {
                    reason,
                    acknowledged,
                    purge_at,
                } => {
                    e.map(3 + u64::from(purge_at.is_some()))?;
                    e.str("type")?.str(LEFT)?;
                    e.str("reason")?.str(reason.token())?;
                    e.str("acknowledged")?.array(acknowledged.len() as u64)?;
                    for h in acknowledged {
                        e.str(&h.to_string())?;
                    }
                    if let Some(t) = purge_at {
                        e.str("purge_at")?.i64(t.unix_millis())?;
                    }
                }
                ChartNotice::Purged { reason, heads, at } => {
                    e.map(4)?;
                    e.str("type")?.str(PURGED)?;
                    e.str("reason")?.str(reason.token())?;
                    e.str("heads")?.array(heads.len() as u64)?;
                    for h in heads {
                        e.str(&h.to_string())?;
                    }
                    e.str("at")?.i64(at.unix_millis())?;
                }
                ChartNotice::PurgeRecorded { at } => {
                    e.map(2)?;
                    e.str("type")?.str(PURGE_RECORDED)?;
                    e.str("at")?.i64(at.unix_millis())?;
                }
                ChartNotice::Revoked { serials, device } => {
                    e.map(3)?;
                    e.str("type")?.str(REVOKED)?;
                    e.str("serials")?.array(serials.len() as u64)?;
                    for s in serials {
                        e.str(s)?;
                    }
                    e.str("device")?.bool(*device)?;
                }
                ChartNotice::TooLarge { bound, limit } => {
                    e.map(3)?;
                    e.str("type")?.str(TOO_LARGE)?;
                    e.str("bound")?.str(bound.token())?;
                    e.str("limit")?.u64(*limit)?;
                }
                ChartNotice::AttachmentWanted { hash, part } => {
                    e.map(3)?;
                    e.str("type")?.str(ATTACHMENT_WANTED)?;
                    e.str("hash")?.str(hash)?;
                    e.str("part")?.u32(*part)?;
                }
                ChartNotice::AttachmentPart { hash, part, data } => {
                    e.map(4)?;
                    e.str("type")?.str(ATTACHMENT_PART)?;
                    e.str("hash")?.str(hash)?;
                    e.str("part")?.u32(*part)?;
                    e.str("data")?.bytes(data)?;
                }
                ChartNotice::AttachmentUnavailable { hash, reason } => {
                    e.map(3)?;
                    e.str("type")?.str(ATTACHMENT_UNAVAILABLE)?;
                    e.str("hash")?.str(hash)?;
                    e.str("reason")?.str(reason)?;
                }
                ChartNotice::BreakGlassFiled { signatures } => {
                    e.map(2)?;
                    e.str("type")?.str(FILED)?;
                    e.str("signatures")?.array(signatures.len() as u64)?;
                    for s in signatures {
                        e.str(s)?;
                    }
                }
            }
            Ok(())
        })();
        // Writing to a Vec cannot fail.
        debug_assert!(written.is_ok());
        e.into_writer()
    }

    /// Reads an ephemeral message's `data`. `None` when it is not a chartsync notice (an
    /// app's own ephemeral message, say) or is malformed: either way, nothing to act on.
    pub fn decode(data: &[u8]) -> Option<ChartNotice> {
        let mut d = Decoder::new(data);
        let n = d.map().ok()??;
        let (mut kind, mut hold, mut reason, mut summary) = (None, None, None, None);
        let (mut acknowledged, mut heads) = (Vec::new(), Vec::new());
        let (mut purge_at, mut at) = (None, None);
        let (mut serials, mut device) = (Vec::new(), false);
        let (mut bound, mut limit) = (None, None);
        let (mut hash, mut part, mut bytes) = (None, None, None);
        for _ in 0..n {
            let key = d.str().ok()?;
            match key {
                "type" => kind = Some(d.str().ok()?.to_string()),
                "hold" => hold = Some(d.i64().ok()?),
                "reason" => reason = Some(d.str().ok()?.to_string()),
                "summary" => summary = Some(d.str().ok()?.to_string()),
                "serials" => {
                    let n = d.array().ok()??;
                    for _ in 0..n {
                        serials.push(d.str().ok()?.to_string());
                    }
                }
                "device" => device = d.bool().ok()?,
                "bound" => bound = Some(d.str().ok()?.to_string()),
                "limit" => limit = Some(d.u64().ok()?),
                "hash" => hash = Some(d.str().ok()?.to_string()),
                "part" => part = Some(d.u32().ok()?),
                "data" => bytes = Some(d.bytes().ok()?.to_vec()),
                "signatures" => {
                    let n = d.array().ok()??;
                    for _ in 0..n {
                        serials.push(d.str().ok()?.to_string());
                    }
                }
                "acknowledged" | "heads" => {
                    let list = if key == "heads" {
                        &mut heads
                    } else {
                        &mut acknowledged
                    };
                    let n = d.array().ok()??;
                    for _ in 0..n {
                        list.push(d.str().ok()?.parse().ok()?);
                    }
                }
                "purge_at" => purge_at = Some(Timestamp::from_unix_millis(d.i64().ok()?).ok()?),
                "at" => at = Some(Timestamp::from_unix_millis(d.i64().ok()?).ok()?),
                _ => {
                    if d.datatype().ok()? == Type::Break {
                        return None;
                    }
                    d.skip().ok()?;
                }
            }
        }
        if d.position() != data.len() {
            return None;
        }
        Some(match kind?.as_str() {
            HELD => ChartNotice::Held {
                hold: hold?,
                reason: HoldReason::from_token(&reason?)?,
                summary: summary.unwrap_or_default(),
            },
            ACCEPTED => ChartNotice::Accepted { hold: hold? },
            REJECTED => ChartNotice::Rejected {
                hold: hold?,
                reason: reason.unwrap_or_default(),
            },
            FULL => ChartNotice::HoldingAreaFull {
                reason: HoldReason::from_token(&reason?)?,
            },
            LEFT => ChartNotice::Left {
                reason: LeftReason::from_token(&reason?)?,
                acknowledged,
                purge_at,
            },
            PURGED => ChartNotice::Purged {
                reason: LeftReason::from_token(&reason?)?,
                heads,
                at: at?,
            },
            PURGE_RECORDED => ChartNotice::PurgeRecorded { at: at? },
            REVOKED => ChartNotice::Revoked { serials, device },
            FILED => ChartNotice::BreakGlassFiled {
                signatures: serials,
            },
            TOO_LARGE => ChartNotice::TooLarge {
                bound: SizeBound::from_token(&bound?)?,
                limit: limit?,
            },
            ATTACHMENT_WANTED => ChartNotice::AttachmentWanted {
                hash: file_name(hash?)?,
                part: part?,
            },
            ATTACHMENT_PART => ChartNotice::AttachmentPart {
                hash: file_name(hash?)?,
                part: part?,
                data: bytes?,
            },
            ATTACHMENT_UNAVAILABLE => ChartNotice::AttachmentUnavailable {
                hash: file_name(hash?)?,
                reason: reason.unwrap_or_default(),
            },
            _ => return None,
        })
    }
}

/// A file's name as a chart writes it, or nothing to act on.
fn file_name(hash: String) -> Option<String> {
    crate::chart::is_sha256_hex(&hash).then_some(hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_notice_reads_back_as_written() {
        let notices = [
            ChartNotice::Held {
                hold: 7,
                reason: HoldReason::AnotherAuthor,
                summary: "1 violation(s), first: change abc names someone other".into(),
            },
            ChartNotice::Accepted { hold: 7 },
            ChartNotice::Rejected {
                hold: 9,
                reason: "duplicate of an entry already charted".into(),
            },
            ChartNotice::HoldingAreaFull {
                reason: HoldReason::InvalidCode,
            },
            ChartNotice::Left {
                reason: LeftReason::Transferred,
                acknowledged: vec![
                    automerge::ChangeHash([7; 32]),
                    automerge::ChangeHash([9; 32]),
                ],
                purge_at: None,
            },
            ChartNotice::Left {
                reason: LeftReason::Revoked,
                acknowledged: vec![automerge::ChangeHash([7; 32])],
                purge_at: Some(Timestamp::from_unix_millis(1_796_000_000_123).unwrap()),
            },
            ChartNotice::Purged {
                reason: LeftReason::Discharged,
                heads: vec![automerge::ChangeHash([3; 32])],
                at: Timestamp::from_unix_millis(1_796_000_000_000).unwrap(),
            },
            ChartNotice::PurgeRecorded {
                at: Timestamp::from_unix_millis(1_796_000_000_000).unwrap(),
            },
            ChartNotice::Revoked {
                serials: vec!["00112233445566778899aabbccddeeff".into()],
                device: true,
            },
            ChartNotice::AttachmentWanted {
                hash: "ab".repeat(32),
                part: 3,
            },
            ChartNotice::AttachmentPart {
                hash: "cd".repeat(32),
                part: 0,
                data: vec![0x25, 0x50, 0x44, 0x46],
            },
            ChartNotice::AttachmentUnavailable {
                hash: "ef".repeat(32),
                reason: "not_permitted".into(),
            },
            ChartNotice::BreakGlassFiled {
                signatures: vec!["ab".repeat(64)],
            },
            ChartNotice::TooLarge {
                bound: SizeBound::Change,
                limit: 16 << 20,
            },
        ];
        for n in notices {
            assert_eq!(ChartNotice::decode(&n.encode()), Some(n));
        }
    }

    #[test]
    fn an_apps_own_ephemeral_message_is_not_a_notice() {
        // automerge-repo apps send presence this way: {cursor: 3}.
        let mut e = Encoder::new(Vec::new());
        e.map(1).unwrap().str("cursor").unwrap().u8(3).unwrap();
        assert_eq!(ChartNotice::decode(&e.into_writer()), None);
        assert_eq!(ChartNotice::decode(b"\xff\x00garbage"), None);
        let held = ChartNotice::Held {
            hold: 1,
            reason: HoldReason::InvalidCode,
            summary: String::new(),
        }
        .encode();
        for end in 0..held.len() {
            assert_eq!(ChartNotice::decode(&held[..end]), None, "prefix of {end}");
        }
    }
}
