//! A change's proof of authorship: the signed-in person's signature over the chart's id, the
//! change's hash, their certificate's serial and when they signed. The change hash covers
//! everything in the change (operations, dependencies, actor, time, message, author), so
//! nothing needs to be put in a canonical form; the chart id stops a proof being replayed
//! into another chart, and the serial names the certificate, hence the person, role and
//! device. The signing time is the tablet's clock when the change was committed: a change's
//! own time is the clinical time the nurse gave (a late entry is hours earlier), so it is the
//! signing time that must fall within the certificate's validity.
//!
//! Proofs travel beside the changes they prove, in the same sync frame
//! (`chartsync/proofs`, docs/protocol.md), as a [`ProofBundle`].

use automerge::ChangeHash;
use ed25519_dalek::SigningKey;
use minicbor::{Decoder, Encoder};

use super::{context, fixed, sign, verify, Certificate, Serial, TrustError};
use crate::chart::ChartId;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeProof {
    pub hash: ChangeHash,
    pub serial: Serial,
    /// When it was signed, seconds since the epoch, by the tablet's clock.
    pub signed_at: i64,
    pub signature: [u8; 64],
}

fn message(chart: ChartId, hash: &ChangeHash, serial: &Serial, signed_at: i64) -> [u8; 72] {
    let mut m = [0u8; 72];
    m[..16].copy_from_slice(chart.as_bytes());
    m[16..48].copy_from_slice(&hash.0);
    m[48..64].copy_from_slice(&serial.0);
    m[64..].copy_from_slice(&signed_at.to_be_bytes());
    m
}

impl ChangeProof {
    /// Signs `hash` in `chart` with the key `serial` certifies, at `signed_at`.
    pub fn sign(
        key: &SigningKey,
        serial: Serial,
        chart: ChartId,
        hash: ChangeHash,
        signed_at: i64,
    ) -> ChangeProof {
        let signature = sign(
            key,
            context::CHANGE,
            &message(chart, &hash, &serial, signed_at),
        );
        ChangeProof {
            hash,
            serial,
            signed_at,
            signature,
        }
    }

    /// Checks the signature against `cert` (which must be the certificate the proof names).
    pub fn verify(&self, chart: ChartId, cert: &Certificate) -> Result<(), TrustError> {
        if cert.serial != self.serial {
            return Err(TrustError::NotThisKey {
                what: "a certificate",
            });
        }
        verify(
            &cert.key,
            context::CHANGE,
            &message(chart, &self.hash, &self.serial, self.signed_at),
            &self.signature,
        )
    }
}

/// The most a frame's proofs may take, certificates included. A 16 MiB frame of the smallest
/// changes would need more; the sender splits its changes across frames long before that.
pub const MAX_PROOF_BUNDLE_BYTES: usize = 4 << 20;
const MAX_CERTS: u64 = 64;

/// Break-glass access a person recorded on a tablet while offline, signed with their key
/// (over [`super::break_glass_message`]), for the frame's chart: the server files it for review.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedGrant {
    pub serial: Serial,
    /// `ETREAT` or `BTG`.
    pub reason: String,
    pub text: String,
    pub signed_at: i64,
    pub signature: [u8; 64],
}

/// The proofs for the changes in one sync frame, and the certificates they name (each sent
/// once per connection; the receiver keeps those it has seen).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProofBundle {
    /// Certificates as [`super::SignedCertificate::to_bytes`] wrote them, unchecked until the
    /// receiver checks them.
    pub certs: Vec<Vec<u8>>,
    pub proofs: Vec<ChangeProof>,
    /// Break-glass grants recorded offline for the frame's chart, not yet filed.
    pub grants: Vec<SignedGrant>,
}

impl ProofBundle {
    pub fn is_empty(&self) -> bool {
        self.certs.is_empty() && self.proofs.is_empty() && self.grants.is_empty()
    }

    /// `{"v": 1, "certs": [bytes], "proofs": [[hash, serial, signed_at, signature]]}`.
    pub fn encode<W: minicbor::encode::Write>(
        &self,
        e: &mut Encoder<W>,
    ) -> Result<(), minicbor::encode::Error<W::Error>> {
        e.map(3 + u64::from(!self.grants.is_empty()))?;
        e.str("v")?.u8(1)?;
        e.str("certs")?.array(self.certs.len() as u64)?;
        for c in &self.certs {
            e.bytes(c)?;
        }
        e.str("proofs")?.array(self.proofs.len() as u64)?;
        for p in &self.proofs {
            e.array(4)?
                .bytes(&p.hash.0)?
                .bytes(&p.serial.0)?
                .i64(p.signed_at)?
                .bytes(&p.signature)?;
        }
        if !self.grants.is_empty() {
            e.str("grants")?.array(self.grants.len() as u64)?;
            for g in &self.grants {
                e.array(5)?
                    .bytes(&g.serial.0)?
                    .str(&g.reason)?
                    .str(&g.text)?
                    .i64(g.signed_at)?
                    .bytes(&g.signature)?;
            }
        }
        Ok(())
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        // Writing to a Vec cannot fail.
        let _ = self.encode(&mut Encoder::new(&mut out));
        out
    }

    /// Reads a bundle written by [`ProofBundle::encode`]; unknown keys are skipped, as in the
    /// rest of the protocol.
    pub fn decode(d: &mut Decoder<'_>) -> Result<ProofBundle, TrustError> {
        let bad = |reason| TrustError::Malformed {
            what: "proof bundle",
            reason,
        };
        let start = d.position();
        let n = d
            .map()
            .map_err(|_| bad("not a map"))?
            .ok_or(bad("indefinite map"))?;
        let mut bundle = ProofBundle::default();
        let mut version = None;
        for _ in 0..n {
            match d.str().map_err(|_| bad("bad key"))? {
                "v" => version = Some(d.u8().map_err(|_| bad("bad version"))?),
                "certs" => {
                    let n = d
                        .array()
                        .map_err(|_| bad("bad certs"))?
                        .ok_or(bad("bad certs"))?;
                    if n > MAX_CERTS {
                        return Err(bad("too many certificates"));
                    }
                    for _ in 0..n {
                        bundle
                            .certs
                            .push(d.bytes().map_err(|_| bad("bad certificate"))?.to_vec());
                    }
                }
                "proofs" => {
                    let n = d
                        .array()
                        .map_err(|_| bad("bad proofs"))?
                        .ok_or(bad("bad proofs"))?;
                    // Each proof takes at least 118 bytes; a count beyond what the input could
                    // hold is refused before anything is allocated for it.
                    if n > (d.input().len() / 118) as u64 {
                        return Err(bad("more proofs than bytes"));
                    }
                    bundle.proofs.reserve(n as usize);
                    for _ in 0..n {
                        if d.array().map_err(|_| bad("bad proof"))? != Some(4) {
                            return Err(bad("a proof is hash, serial, time and signature"));
                        }
                        let hash = fixed::<32>(d.bytes(), "proof bundle", "bad change hash")?;
                        let serial = fixed::<16>(d.bytes(), "proof bundle", "bad serial")?;
                        let signed_at = d.i64().map_err(|_| bad("bad signing time"))?;
                        let signature = fixed::<64>(d.bytes(), "proof bundle", "bad signature")?;
                        bundle.proofs.push(ChangeProof {
                            hash: ChangeHash(hash),
                            serial: Serial(serial),
                            signed_at,
                            signature,
                        });
                    }
                }
                "grants" => {
                    let n = d
                        .array()
                        .map_err(|_| bad("bad grants"))?
                        .ok_or(bad("bad grants"))?;
                    if n > MAX_CERTS {
                        return Err(bad("too many grants"));
                    }
                    for _ in 0..n {
                        if d.array().map_err(|_| bad("bad grant"))? != Some(5) {
                            return Err(bad("a grant is serial, reason, text, time, signature"));
                        }
                        let serial = fixed::<16>(d.bytes(), "proof bundle", "bad serial")?;
                        let reason = d.str().map_err(|_| bad("bad reason"))?.to_string();
                        let text = d.str().map_err(|_| bad("bad text"))?.to_string();
                        let signed_at = d.i64().map_err(|_| bad("bad signing time"))?;
                        let signature = fixed::<64>(d.bytes(), "proof bundle", "bad signature")?;
                        if reason.len() > 16 || text.len() > 4096 {
                            return Err(bad("a grant's reason or text is too long"));
                        }
                        bundle.grants.push(SignedGrant {
                            serial: Serial(serial),
                            reason,
                            text,
                            signed_at,
                            signature,
                        });
                    }
                }
                _ => d.skip().map_err(|_| bad("bad value"))?,
            }
            if d.position() - start > MAX_PROOF_BUNDLE_BYTES {
                return Err(bad("too large"));
            }
        }
        if version != Some(1) {
            return Err(bad("unknown version"));
        }
        Ok(bundle)
    }
}
