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
use chartsync_core::trust::{
    ChangeProof, DeviceId, ProofBundle, Serial, SignedCertificate, SignedGrant,
};

use crate::directory::Trust;

use chartsync_core::trust::PROOF_GRACE_SECS;
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
    /// Break-glass grants recorded offline, by chart, until the chart's worker files them.
    grants: HashMap<chartsync_core::chart::ChartId, Vec<SignedGrant>>,
}

impl Verifier {
    pub fn new(device: DeviceId, trust: Arc<Trust>) -> Verifier {
        Verifier {
            device,
            trust,
            certs: HashMap::new(),
            proofs: HashMap::new(),
            grants: HashMap::new(),
        }
    }

    /// The offline break-glass grants sent for `chart`, to file.
    pub fn take_grants(&mut self, chart: chartsync_core::chart::ChartId) -> Vec<SignedGrant> {
        self.grants.remove(&chart).unwrap_or_default()
    }

    /// Checks an offline grant's certificate and signature: the writer it was for, or why not.
    pub fn check_grant(
        &mut self,
        store: &ChartStore,
        chart: chartsync_core::chart::ChartId,
        g: &SignedGrant,
        now: i64,
    ) -> Result<Writer, &'static str> {
        let cert = self
            .certificate(store, g.serial)
            .ok_or("a certificate this server did not issue")?;
        let c = cert.certificate();
        if c.device != self.device {
            return Err("a certificate for another tablet");
        }
        if !c.valid_at(g.signed_at) || g.signed_at > now + CLOCK_SKEW_SECS {
            return Err("signed outside the certificate's validity");
        }
        let revoked = store
            .revocations_of(c.serial, &c.user, c.device)
            .unwrap_or_default()
            .iter()
            .any(|r| match r.severity {
                Severity::Compromised => true,
                Severity::Administrative => (g.signed_at + 1) * 1000 > r.effective_at.unix_millis(),
            });
        if revoked {
            return Err("signed under a revoked credential");
        }
        chartsync_core::trust::verify_break_glass(
            c,
            &chart,
            &g.reason,
            &g.text,
            g.signed_at,
            &g.signature,
        )
        .map_err(|_| "the signature does not verify")?;
        Ok(Writer {
            user: c.user.clone(),
            role: c.role,
            wards: c.wards.clone(),
            serial: Some(c.serial),
        })
    }

    /// Takes in a frame's proofs (for chart `chart`). Certificates that do not verify are
    /// ignored (their changes will be held as signed under an unknown certificate). `false`:
    /// too many proofs wait.
    pub fn add(&mut self, chart: chartsync_core::chart::ChartId, bundle: ProofBundle) -> bool {
        if !bundle.grants.is_empty() {
            let waiting = self.grants.entry(chart).or_default();
            for g in bundle.grants {
                if !waiting.contains(&g) && waiting.len() < 64 {
                    waiting.push(g);
                }
            }
        }
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
            grants: Vec::new(),
        }
    }

    /// Forgets the proofs of changes that are now stored or held.
    pub fn done(&mut self, hashes: &[ChangeHash]) {
        for h in hashes {
            self.proofs.remove(h);
        }
    }

    /// Checks each change's proof; on success, the writer of each, in order.
    /// `author_of` reads the author a change claims; `now_ms` is the server's clock.
    pub fn verify(
        &mut self,
        store: &ChartStore,
        chart: chartsync_core::chart::ChartId,
        changes: &[ChangeHash],
        author_of: impl Fn(&ChangeHash) -> Option<Staff>,
        now_ms: i64,
    ) -> Result<Vec<Writer>, Unproven> {
        let now = now_ms.div_euclid(1000);
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
            if let Some(r) = revocations.iter().find(|r| {
                let from = r.effective_at.unix_millis();
                match r.severity {
                    // Whatever it claims: a thief can set the clock back.
                    Severity::Compromised => now_ms >= from,
                    // Signed in the second the revocation took effect: held, to be safe.
                    Severity::Administrative => (time + 1) * 1000 > from,
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

#[cfg(test)]
mod tests {
    use chartsync_core::chart::{
        Chart, ChartId, EncounterClass, NewEncounter, NewPatient, Role, Staff, Timestamp,
    };
    use chartsync_core::store::{Actor, StoreOptions};
    use chartsync_core::trust::{CertificateRequest, DeviceKey, Issuer, UnlockedKey};

    use super::*;

    struct Fixture {
        _dir: tempfile::TempDir,
        store: ChartStore,
        trust: Arc<Trust>,
        tablet: DeviceKey,
        now: i64,
    }

    impl Fixture {
        fn new() -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            let store =
                ChartStore::open(dir.path().join("charts.db"), StoreOptions::default()).unwrap();
            let trust = Arc::new(Trust::load_or_create(dir.path(), Default::default()).unwrap());
            Fixture {
                _dir: dir,
                store,
                trust,
                tablet: DeviceKey::from_secret(&[1; 32]).unwrap(),
                now: Timestamp::now().unix(),
            }
        }

        /// A key for `user` on `device`, certified from `not_before` to `not_after`.
        fn person(
            &self,
            user: &str,
            role: Role,
            device: DeviceId,
            valid: (i64, i64),
        ) -> UnlockedKey {
            let key = UnlockedKey::generate(user);
            let cert = self.trust.issue(
                CertificateRequest {
                    user: user.into(),
                    role,
                    wards: vec!["4west".into()],
                    device,
                    key: key.public_key(),
                    not_before: valid.0,
                    not_after: valid.1,
                },
                self.now,
            );
            self.store.save_certificate(None, &cert).unwrap();
            key.certified(cert.certificate().serial)
        }

        fn always(&self) -> (i64, i64) {
            (self.now - 3600, self.now + 86_400)
        }
    }

    /// A chart admitted by `by`: its changes' hashes and authors.
    fn admitted(by: &Staff) -> (ChartId, Chart, Vec<ChangeHash>) {
        let chart = Chart::create(
            NewPatient {
                mrn: "MRN-7".into(),
                family_name: "Rivera".into(),
                given_names: "Ana".into(),
                birth_date: None,
                sex: None,
                address: None,
                phone: None,
            },
            NewEncounter {
                ward: "4west".into(),
                bed: None,
                class: EncounterClass::Inpatient,
                admit_source: None,
                attending: None,
            },
            by,
            Timestamp::now(),
        )
        .unwrap();
        let hashes = chart
            .doc()
            .get_changes(&[])
            .iter()
            .map(|c| c.hash())
            .collect();
        (ChartId::random(), chart, hashes)
    }

    fn check(
        f: &Fixture,
        verifier: &mut Verifier,
        id: ChartId,
        chart: &Chart,
        hashes: &[ChangeHash],
        now: i64,
    ) -> Result<Vec<Writer>, HoldReason> {
        let author = |h: &ChangeHash| {
            let change = chart.doc().get_change_by_hash(h)?;
            chart.author_of(&change)
        };
        verifier
            .verify(&f.store, id, hashes, author, now * 1000)
            .map_err(|u| u.reason)
    }

    fn bundle(proofs: Vec<ChangeProof>) -> ProofBundle {
        ProofBundle {
            certs: Vec::new(),
            proofs,
            grants: Vec::new(),
        }
    }

    use automerge::ReadDoc;

    #[test]
    fn a_change_is_taken_only_with_a_valid_proof_by_its_author_on_this_tablet() {
        let f = Fixture::new();
        let device = f.tablet.id();
        let jones = f.person("him.jones", Role::Technician, device, f.always());
        let staff = Staff::new("him.jones", Role::Technician, device.to_string());
        let (id, chart, hashes) = admitted(&staff);
        let proofs: Vec<ChangeProof> = hashes.iter().map(|h| jones.prove(id, *h)).collect();

        // No proof.
        let mut v = Verifier::new(device, f.trust.clone());
        assert_eq!(
            check(&f, &mut v, id, &chart, &hashes, f.now),
            Err(HoldReason::Unsigned)
        );
        // Proven: the writer is the certificate's person, role and wards.
        v.add(id, bundle(proofs.clone()));
        let writers = check(&f, &mut v, id, &chart, &hashes, f.now).unwrap();
        assert_eq!(writers[0].user, "him.jones");
        assert_eq!(writers[0].role, Role::Technician);
        assert!(writers[0].covers("4west") && !writers[0].covers("icu"));

        // The same proof for another chart: the signature covers the chart's id.
        let mut v = Verifier::new(device, f.trust.clone());
        v.add(id, bundle(proofs.clone()));
        assert_eq!(
            check(&f, &mut v, ChartId::random(), &chart, &hashes, f.now),
            Err(HoldReason::BadSignature)
        );

        // A signature with a bit flipped.
        let mut bad = proofs.clone();
        bad[0].signature[5] ^= 1;
        let mut v = Verifier::new(device, f.trust.clone());
        v.add(id, bundle(bad));
        assert_eq!(
            check(&f, &mut v, id, &chart, &hashes, f.now),
            Err(HoldReason::BadSignature)
        );

        // A certificate some other issuer made: ignored, so the proof names an unknown one.
        let stranger = Issuer::from_seed(&[5; 32]);
        let key = UnlockedKey::generate("him.jones");
        let cert = stranger.issue(
            CertificateRequest {
                user: "him.jones".into(),
                role: Role::Technician,
                wards: vec!["4west".into()],
                device,
                key: key.public_key(),
                not_before: f.now - 60,
                not_after: f.now + 60,
            },
            f.now,
        );
        let key = key.certified(cert.certificate().serial);
        let mut v = Verifier::new(device, f.trust.clone());
        v.add(
            id,
            ProofBundle {
                certs: vec![cert.to_bytes()],
                proofs: hashes.iter().map(|h| key.prove(id, *h)).collect(),
                grants: Vec::new(),
            },
        );
        assert_eq!(
            check(&f, &mut v, id, &chart, &hashes, f.now),
            Err(HoldReason::UnknownCertificate)
        );

        // Signed by rn.park, claiming him.jones.
        let park = f.person("rn.park", Role::Nurse, device, f.always());
        let mut v = Verifier::new(device, f.trust.clone());
        v.add(
            id,
            bundle(hashes.iter().map(|h| park.prove(id, *h)).collect()),
        );
        assert_eq!(
            check(&f, &mut v, id, &chart, &hashes, f.now),
            Err(HoldReason::ForgedAuthor)
        );

        // A key certified for another tablet, sent from this one.
        let other = DeviceKey::from_secret(&[2; 32]).unwrap().id();
        let lifted = f.person("him.jones", Role::Technician, other, f.always());
        let (id2, chart2, hashes2) = admitted(&Staff::new(
            "him.jones",
            Role::Technician,
            other.to_string(),
        ));
        let mut v = Verifier::new(device, f.trust.clone());
        v.add(
            id,
            bundle(hashes2.iter().map(|h| lifted.prove(id2, *h)).collect()),
        );
        assert_eq!(
            check(&f, &mut v, id2, &chart2, &hashes2, f.now),
            Err(HoldReason::AnotherDevice)
        );

        // A certificate that ended an hour ago.
        let ended = f.person(
            "him.jones",
            Role::Technician,
            device,
            (f.now - 7200, f.now - 3600),
        );
        let mut v = Verifier::new(device, f.trust.clone());
        v.add(
            id,
            bundle(hashes.iter().map(|h| ended.prove(id, *h)).collect()),
        );
        assert_eq!(
            check(&f, &mut v, id, &chart, &hashes, f.now),
            Err(HoldReason::CertificateExpired)
        );
    }

    #[test]
    fn a_revocation_holds_what_was_proven_after_it_and_a_compromise_holds_all_that_arrives_later() {
        let f = Fixture::new();
        let device = f.tablet.id();
        let admin = Actor {
            user: "admin.kim".into(),
            role: "admin".into(),
            device: "cli".into(),
        };
        let staff = Staff::new("him.jones", Role::Technician, device.to_string());
        let check_with = |severity: Severity, effective: i64, arrives: i64| {
            let jones = f.person("him.jones", Role::Technician, device, f.always());
            let (id, chart, hashes) = admitted(&staff);
            let proofs = hashes.iter().map(|h| jones.prove(id, *h)).collect();
            f.store
                .revoke(
                    &admin,
                    &chartsync_core::store::Revoked::Certificate(jones.serial().to_string()),
                    severity,
                    Timestamp::from_unix(effective).unwrap(),
                    "left the hospital",
                )
                .unwrap();
            let mut v = Verifier::new(device, f.trust.clone());
            v.add(id, bundle(proofs));
            check(&f, &mut v, id, &chart, &hashes, arrives)
        };
        // Signed now; revoked from a minute from now; arriving ten minutes from now.
        let (soon, later) = (f.now + 60, f.now + 600);
        assert!(check_with(Severity::Administrative, soon, later).is_ok());
        assert_eq!(
            check_with(Severity::Compromised, soon, later),
            Err(HoldReason::Revoked)
        );
        // Signed after the revocation took effect: held either way.
        assert_eq!(
            check_with(Severity::Administrative, f.now - 60, f.now),
            Err(HoldReason::Revoked)
        );
    }
}
