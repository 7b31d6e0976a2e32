//! Who wrote a change, proven: device keys, certificates the server issues to a person on a
//! device, signatures over change hashes, and signing keys sealed under a person's PIN
//! (docs/adr/0008-shared-tablets.md). No I/O: the store keeps the bytes, the server and the
//! sync client move them.
//!
//! Every signature here is Ed25519 over `context ‖ 0x00 ‖ message`, with one context per
//! kind of statement, so that no signature made for one purpose can be replayed as another.

mod cert;
mod proof;
mod seal;

pub use cert::{Certificate, CertificateRequest, Issuer, Serial, SignedCertificate};
pub use proof::{ChangeProof, ProofBundle, SignedGrant, MAX_PROOF_BUNDLE_BYTES};
pub use seal::{check_pin, KdfParams, SealHeader, SealedKey, UnlockedKey};

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// A change may reach the server this long after its signer's certificate ended (a tablet
/// offline over a long weekend); after that its proof no longer counts.
pub const PROOF_GRACE_SECS: i64 = 72 * 3600;

/// What the server tells a tablet at enrolment about how it must treat sign-ins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Policy {
    /// Certificates last this long, in seconds (default 7 days).
    pub certificate_secs: u64,
    /// A signed-in person is locked after this much idle time, in seconds (default 5
    /// minutes, 45 CFR 164.312(a)(2)(iii)).
    pub idle_lock_secs: u64,
    /// Wrong PINs before the sealed key is erased (default 5).
    pub pin_attempts: u32,
    /// How long break-glass access lasts, in seconds (default 4 hours).
    pub break_glass_secs: u64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            certificate_secs: 7 * 86_400,
            idle_lock_secs: 300,
            pin_attempts: 5,
            break_glass_secs: 4 * 3600,
        }
    }
}

/// Statements signed with a device's key or a person's key; each has its own context.
pub mod context {
    /// A certificate, signed by the server's issuer key.
    pub const CERTIFICATE: &str = "chartsync/cert@1";
    /// A change's hash in a chart, signed by the person who made it.
    pub const CHANGE: &str = "chartsync/change@1";
    /// A server's challenge, signed by a device to open a session or redeem an enrolment.
    pub const DEVICE: &str = "chartsync/device@1";
    /// A server's challenge, signed by a new personal key to show its holder has it.
    pub const POSSESSION: &str = "chartsync/possession@1";
    /// A person's request for break-glass access to a chart.
    pub const BREAK_GLASS: &str = "chartsync/break-glass@1";
}

/// What a proof, a certificate or a sealed key failed on. None of these name a person or a
/// chart's contents; a caller adds ids where they help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrustError {
    #[error("not a well-formed {what}: {reason}")]
    Malformed {
        what: &'static str,
        reason: &'static str,
    },
    #[error("the certificate was not issued by this server")]
    UnknownIssuer,
    #[error("the certificate's signature does not verify")]
    BadCertificate,
    #[error("the signature does not verify")]
    BadSignature,
    #[error("a device secret is 32 random bytes; this one is {0} bytes")]
    BadSecret(usize),
    #[error("a PIN is 6 to 12 digits")]
    PinFormat,
    #[error("the PIN is not right")]
    WrongPin,
    #[error("the sealed key is for {what} other than the one asked for")]
    NotThisKey { what: &'static str },
    #[error("the key derivation parameters are outside what this build accepts")]
    KdfParams,
}

/// 16 bytes naming an enrolled device: the first half of SHA-256 of its public key. Shown as
/// 32 lowercase hex digits, which is also what `Staff.device` holds on an enrolled device.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceId(pub [u8; 16]);

impl DeviceId {
    pub fn of(public_key: &[u8; 32]) -> DeviceId {
        let digest = Sha256::digest(public_key);
        let mut id = [0u8; 16];
        id.copy_from_slice(&digest[..16]);
        DeviceId(id)
    }

    pub fn parse(s: &str) -> Result<DeviceId, TrustError> {
        let bytes = hex::decode(s).map_err(|_| TrustError::Malformed {
            what: "device id",
            reason: "not hex",
        })?;
        let id: [u8; 16] = bytes.try_into().map_err(|_| TrustError::Malformed {
            what: "device id",
            reason: "not 16 bytes",
        })?;
        Ok(DeviceId(id))
    }
}

impl std::fmt::Display for DeviceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl std::fmt::Debug for DeviceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DeviceId({self})")
    }
}

/// A device's own key, derived from the 32-byte secret the app keeps in the platform's key
/// store (Android Keystore, iOS Keychain) and hands to the core when it opens. The same secret
/// also peppers the PIN seals, so a copied database cannot be attacked away from the tablet.
pub struct DeviceKey {
    signing: SigningKey,
    pepper: Zeroizing<[u8; 32]>,
}

impl DeviceKey {
    pub fn from_secret(secret: &[u8]) -> Result<DeviceKey, TrustError> {
        if secret.len() != 32 {
            return Err(TrustError::BadSecret(secret.len()));
        }
        let seed = Zeroizing::new(derive("chartsync/device-key@1", secret));
        let pepper = Zeroizing::new(derive("chartsync/seal-pepper@1", secret));
        Ok(DeviceKey {
            signing: SigningKey::from_bytes(&seed),
            pepper,
        })
    }

    /// A new random device secret, for an app to keep in its key store.
    pub fn new_secret() -> Zeroizing<[u8; 32]> {
        Zeroizing::new(random())
    }

    pub fn public_key(&self) -> [u8; 32] {
        self.signing.verifying_key().to_bytes()
    }

    pub fn id(&self) -> DeviceId {
        DeviceId::of(&self.public_key())
    }

    /// Signs a server's challenge (enrolment, session).
    pub fn sign_challenge(&self, challenge: &[u8]) -> [u8; 64] {
        sign(&self.signing, context::DEVICE, challenge)
    }

    pub(crate) fn pepper(&self) -> &[u8; 32] {
        &self.pepper
    }
}

impl std::fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DeviceKey({})", self.id())
    }
}

/// Checks a device's signature over a challenge.
pub fn verify_device(
    public_key: &[u8; 32],
    challenge: &[u8],
    signature: &[u8],
) -> Result<(), TrustError> {
    verify(public_key, context::DEVICE, challenge, signature)
}

/// Checks that whoever asks for a certificate for `public_key` holds its private half.
pub fn verify_possession(
    public_key: &[u8; 32],
    challenge: &[u8],
    signature: &[u8],
) -> Result<(), TrustError> {
    verify(public_key, context::POSSESSION, challenge, signature)
}

/// What a person signs to ask for break-glass access: the chart, the reason's code, a hash of
/// their text, and when.
pub fn break_glass_message(
    chart: &crate::chart::ChartId,
    reason: &str,
    text: &str,
    signed_at: i64,
) -> Vec<u8> {
    let mut m = Vec::with_capacity(16 + reason.len() + 1 + 32 + 8);
    m.extend_from_slice(chart.as_bytes());
    m.extend_from_slice(reason.as_bytes());
    m.push(0);
    m.extend_from_slice(&Sha256::digest(text.as_bytes()));
    m.extend_from_slice(&signed_at.to_be_bytes());
    m
}

/// Checks a person's break-glass request against their certificate.
pub fn verify_break_glass(
    cert: &Certificate,
    chart: &crate::chart::ChartId,
    reason: &str,
    text: &str,
    signed_at: i64,
    signature: &[u8],
) -> Result<(), TrustError> {
    verify(
        &cert.key,
        context::BREAK_GLASS,
        &break_glass_message(chart, reason, text, signed_at),
        signature,
    )
}

/// 32 random bytes from the operating system.
pub fn random<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    // The OS random source failing is not something to carry on from with weak keys.
    getrandom::fill(&mut bytes).expect("the operating system's random source failed");
    bytes
}

/// A CBOR byte string of exactly `N` bytes.
pub(crate) fn fixed<const N: usize>(
    bytes: Result<&[u8], minicbor::decode::Error>,
    what: &'static str,
    reason: &'static str,
) -> Result<[u8; N], TrustError> {
    bytes
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or(TrustError::Malformed { what, reason })
}

fn derive(label: &str, secret: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(label.as_bytes());
    h.update([0u8]);
    h.update(secret);
    h.finalize().into()
}

fn framed(context: &str, message: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(context.len() + 1 + message.len());
    m.extend_from_slice(context.as_bytes());
    m.push(0);
    m.extend_from_slice(message);
    m
}

pub(crate) fn sign(key: &SigningKey, context: &str, message: &[u8]) -> [u8; 64] {
    key.sign(&framed(context, message)).to_bytes()
}

pub(crate) fn verify(
    public_key: &[u8; 32],
    context: &str,
    message: &[u8],
    signature: &[u8],
) -> Result<(), TrustError> {
    let key = VerifyingKey::from_bytes(public_key).map_err(|_| TrustError::BadSignature)?;
    let signature = Signature::from_slice(signature).map_err(|_| TrustError::BadSignature)?;
    // Strict: no small-order keys, no malleable signatures.
    key.verify_strict(&framed(context, message), &signature)
        .map_err(|_| TrustError::BadSignature)
}

#[cfg(test)]
mod tests;
