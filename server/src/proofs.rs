//! Checking who wrote the changes an enrolled tablet sends (docs/adr/0008-shared-tablets.md):
//! each change must come with a proof, signed by a key this server certified for a person on
//! that tablet, naming that person as its author, made within the certificate's validity and
//! before any revocation that reaches it. A change that fails is held with the reason; one
//! that passes is then checked as that person's change, with their role and wards.

use std::collections::HashMap;
use std::sync::Arc;

use automerge::ChangeHash;
use chartsync_core::chart::{Role, Staff};
use chartsync_core::protocol::HoldReason;
use chartsync_core::store::{ChartStore, Revocation, Severity};
use chartsync_core::trust::{ChangeProof, DeviceId, ProofBundle, Serial, SignedCertificate};

use crate::directory::Trust;

/// A change may arrive this long after its certificate ended (the reasoning of the move
/// window: a tablet offline over a long weekend).
pub const PROOF_GRACE_SECS: i64 = 72 * 3600;
/// How far ahead of the server's clock a tablet's signing time may be.
const CLOCK_SKEW_SECS: i64 = 300;
/// Proofs waiting for their changes on one connection; beyond this the connection is ended.
const MAX_WAITING_PROOFS: usize = 200_000;

/// Who proved a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Writer {
    pub user: String,
    pub role: Role,
    pub wards: Vec<String>,
    pub serial: Option<Serial>,
}

impl Writer {
    pub fn covers(&self, ward: &str) -> bool {
        self.wards
            .iter()
            .any(|w| w == ward || w == crate::auth::ALL_WARDS)
    }
}

/// Why changes could not be taken as proven.
#[derive(Debug)]
pub struct Unproven {
    pub reason: HoldReason,
    pub summary: String,
    /// Who signed them, where that much verified.
    pub signer: Option<Writer>,
}

/// One tablet connection's certificates and the proofs it sent, until their changes arrive.
pub struct Verifier {
    device: DeviceId,
    trust: Arc<Trust>,
    certs: HashMap<Serial, Arc<SignedCertificate>>,
    proofs: HashMap<ChangeHash, Vec<ChangeProof>>,
}

impl Verifier {
    pub fn new(device: DeviceId, trust: Arc<Trust>) -> Verifier {
        Verifier {
            device,
            trust,
            certs: HashMap::new(),
            proofs: HashMap::new(),
        }
    }

    /// Takes in a frame's proofs. Certificates that do not verify are ignored (their changes
    /// will be held as signed under an unknown certificate). `false`: too many proofs wait.
    pub fn add(&mut self, bundle: ProofBundle) -> bool {
        for bytes in bundle.certs {
            if let Ok(cert) = SignedCertificate::from_bytes(&bytes, &self.trust.issuer_keys()) {
                self.certs.insert(cert.certificate().serial, Arc::new(cert));
            }
        }
        for p in bundle.proofs {
            let entry = self.proofs.entry(p.hash).or_default();
            if !entry.contains(&p) {
                entry.push(p);
            }
        }
        self.proofs.len() <= MAX_WAITING_PROOFS
    }

    fn certificate(
        &mut self,
        store: &ChartStore,
        serial: Serial,
    ) -> Option<Arc<SignedCertificate>> {
        if let Some(c) = self.certs.get(&serial) {
            return Some(c.clone());
        }
        let bytes = store.certificate(serial).ok().flatten()?;
        let cert = Arc::new(SignedCertificate::from_bytes(&bytes, &self.trust.issuer_keys()).ok()?);
        self.certs.insert(serial, cert.clone());
        Some(cert)
    }

    /// The proofs kept for `hashes`, for the holding area or the store.
    pub fn proofs_of(&self, hashes: &[ChangeHash]) -> Vec<ChangeProof> {
        hashes
            .iter()
            .filter_map(|h| self.proofs.get(h))
            .flatten()
            .cloned()
            .collect()
    }

    /// A bundle of the proofs (and certificates) of `hashes`, as the holding area keeps them.
    pub fn bundle_of(&self, hashes: &[ChangeHash]) -> ProofBundle {
        let proofs = self.proofs_of(hashes);
        let mut serials: Vec<Serial> = proofs.iter().map(|p| p.serial).collect();
        serials.sort();
        serials.dedup();
        ProofBundle {
            certs: serials
                .iter()
                .filter_map(|s| self.certs.get(s))
                .map(|c| c.to_bytes())
                .collect(),
            proofs,
        }
    }

    /// Forgets the proofs of changes that are now stored or held.
    pub fn done(&mut self, hashes: &[ChangeHash]) {
        for h in hashes {
            self.proofs.remove(h);
        }
    }

    /// Checks each change's proof; on success, the writer of each, in order.
    /// `author_of` reads the author a change claims; `now` is the server's clock (seconds).
    pub fn verify(
        &mut self,
        store: &ChartStore,
        chart: chartsync_core::chart::ChartId,
        changes: &[ChangeHash],
        author_of: impl Fn(&ChangeHash) -> Option<Staff>,
        now: i64,
    ) -> Result<Vec<Writer>, Unproven> {
        let mut revoked: HashMap<Serial, Vec<Revocation>> = HashMap::new();
        let mut writers = Vec::with_capacity(changes.len());
        for hash in changes {
            let short = &hash.to_string()[..12];
            let held = |reason, summary: String, signer: Option<Writer>| Unproven {
                reason,
                summary,
                signer,
            };
            let Some(proofs) = self.proofs.get(hash).cloned() else {
                return Err(held(
                    HoldReason::Unsigned,
                    format!("change {short} came with no proof of who made it"),
                    None,
                ));
            };
            // The first proof under a certificate this server issued decides.
            let Some((proof, cert)) = proofs
                .iter()
                .find_map(|p| self.certificate(store, p.serial).map(|c| (p.clone(), c)))
            else {
                return Err(held(
                    HoldReason::UnknownCertificate,
                    format!(
                        "change {short} is signed under a certificate this server did not issue"
                    ),
                    None,
                ));
            };
            let c = cert.certificate();
            let signer = Writer {
                user: c.user.clone(),
                role: c.role,
                wards: c.wards.clone(),
                serial: Some(c.serial),
            };
            if proof.verify(chart, c).is_err() {
                return Err(held(
                    HoldReason::BadSignature,
                    format!("the signature on change {short} does not verify"),
                    Some(signer),
                ));
            }
            let time = proof.signed_at;
            let Some(author) = author_of(hash) else {
                return Err(held(
                    HoldReason::ForgedAuthor,
                    format!("change {short} names no author"),
                    Some(signer),
                ));
            };
            if author.user != c.user
                || author.role != c.role
                || author.device != c.device.to_string()
            {
                return Err(held(
                    HoldReason::ForgedAuthor,
                    format!(
                        "change {short} claims {} as {} but was signed by {} as {}",
                        author.user,
                        author.role.token(),
                        c.user,
                        c.role.token()
                    ),
                    Some(signer),
                ));
            }
            if c.device != self.device {
                return Err(held(
                    HoldReason::AnotherDevice,
                    format!(
                        "change {short} was signed with a key issued for device {}",
                        c.device
                    ),
                    Some(signer),
                ));
            }
            if !c.valid_at(time)
                || time > now + CLOCK_SKEW_SECS
                || now > c.not_after + PROOF_GRACE_SECS
            {
                return Err(held(
                    HoldReason::CertificateExpired,
                    format!(
                        "change {short} was made or sent outside certificate {}'s validity",
                        c.serial
                    ),
                    Some(signer),
                ));
            }
            let revocations = match revoked.get(&c.serial) {
                Some(r) => r,
                None => {
                    let found = store
                        .revocations_of(c.serial, &c.user, c.device)
                        .unwrap_or_default();
                    revoked.entry(c.serial).or_insert(found)
                }
            };
            let now_ms = now * 1000;
            if let Some(r) = revocations.iter().find(|r| {
                let from = r.effective_at.unix_millis();
                match r.severity {
                    // Whatever it claims: a thief can set the clock back.
                    Severity::Compromised => now_ms >= from,
                    Severity::Administrative => time * 1000 >= from,
                }
            }) {
                return Err(held(
                    HoldReason::Revoked,
                    format!(
                        "change {short} was proven by a credential revoked ({}) by revocation {}",
                        r.severity.token(),
                        r.id
                    ),
                    Some(signer),
                ));
            }
            writers.push(signer);
        }
        Ok(writers)
    }
}
