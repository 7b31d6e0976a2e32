//! Certificates: the server's statement that a person, in a role, on some wards, holds a
//! signing key on one enrolled device, for a limited time. Deterministic CBOR signed with the
//! server's Ed25519 issuer key. The signature covers the exact bytes sent, which are kept as
//! received, so nothing is re-encoded before checking.

use ed25519_dalek::SigningKey;
use minicbor::{Decoder, Encoder};
use sha2::{Digest, Sha256};

use super::{context, fixed, sign, verify, DeviceId, TrustError};
use crate::chart::Role;

/// A certificate's serial number: 16 random bytes, shown as hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Serial(pub [u8; 16]);

impl Serial {
    pub fn random() -> Serial {
        Serial(super::random())
    }

    pub fn parse(s: &str) -> Result<Serial, TrustError> {
        let bytes = hex::decode(s).map_err(|_| malformed("certificate serial", "not hex"))?;
        Ok(Serial(bytes.try_into().map_err(|_| {
            malformed("certificate serial", "not 16 bytes")
        })?))
    }
}

impl std::fmt::Display for Serial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl std::fmt::Debug for Serial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Serial({self})")
    }
}

/// What a certificate says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certificate {
    pub serial: Serial,
    /// The issuer key's id: the first 8 bytes of SHA-256 of its public key.
    pub issuer: [u8; 8],
    pub user: String,
    pub role: Role,
    pub wards: Vec<String>,
    pub device: DeviceId,
    /// The person's Ed25519 public key on that device.
    pub key: [u8; 32],
    /// Seconds since the epoch.
    pub issued_at: i64,
    pub not_before: i64,
    pub not_after: i64,
}

impl Certificate {
    /// Whether `at` (seconds since the epoch) lies within the validity period.
    pub fn valid_at(&self, at: i64) -> bool {
        self.not_before <= at && at <= self.not_after
    }
}

/// A certificate with the bytes its signature covers, as it travels and is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCertificate {
    cert: Certificate,
    body: Vec<u8>,
    signature: [u8; 64],
}

/// Certificates are small; anything bigger than this is refused unread.
const MAX_CERTIFICATE_BYTES: usize = 4096;
const MAX_WARDS: usize = 64;

impl SignedCertificate {
    pub fn certificate(&self) -> &Certificate {
        &self.cert
    }

    /// The wire form: a CBOR map `{"c": body, "s": signature}`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.body.len() + 80);
        let mut e = Encoder::new(&mut out);
        // Writing to a Vec cannot fail.
        let _ = e
            .map(2)
            .and_then(|e| e.str("c"))
            .and_then(|e| e.bytes(&self.body))
            .and_then(|e| e.str("s"))
            .and_then(|e| e.bytes(&self.signature));
        out
    }

    /// Reads a certificate and checks it was signed by one of `issuers` (this server's issuer
    /// public keys, current and retired). Validity dates are the caller's to check: whether a
    /// certificate counts depends on when the change it proves was made.
    pub fn from_bytes(bytes: &[u8], issuers: &[[u8; 32]]) -> Result<SignedCertificate, TrustError> {
        if bytes.len() > MAX_CERTIFICATE_BYTES {
            return Err(malformed("certificate", "too large"));
        }
        let mut d = Decoder::new(bytes);
        let n = d
            .map()
            .map_err(|_| malformed("certificate", "not a CBOR map"))?;
        if n != Some(2) {
            return Err(malformed("certificate", "not a map of two entries"));
        }
        let (mut body, mut signature) = (None, None);
        for _ in 0..2 {
            match d.str().map_err(|_| malformed("certificate", "bad key"))? {
                "c" => {
                    body = Some(
                        d.bytes()
                            .map_err(|_| malformed("certificate", "bad body"))?,
                    )
                }
                "s" => {
                    signature = Some(
                        d.bytes()
                            .map_err(|_| malformed("certificate", "bad signature field"))?,
                    )
                }
                _ => return Err(malformed("certificate", "unknown key")),
            }
        }
        if d.position() != bytes.len() {
            return Err(malformed("certificate", "trailing bytes"));
        }
        let (Some(body), Some(signature)) = (body, signature) else {
            return Err(malformed("certificate", "missing body or signature"));
        };
        let signature: [u8; 64] = signature
            .try_into()
            .map_err(|_| malformed("certificate", "signature is not 64 bytes"))?;
        let cert = decode_body(body)?;
        let issuer = issuers
            .iter()
            .find(|k| key_id(k) == cert.issuer)
            .ok_or(TrustError::UnknownIssuer)?;
        verify(issuer, context::CERTIFICATE, body, &signature)
            .map_err(|_| TrustError::BadCertificate)?;
        Ok(SignedCertificate {
            cert,
            body: body.to_vec(),
            signature,
        })
    }
}

/// What the server fills in when it issues a certificate; serial, issuer and issue time are
/// its own.
#[derive(Debug, Clone)]
pub struct CertificateRequest {
    pub user: String,
    pub role: Role,
    pub wards: Vec<String>,
    pub device: DeviceId,
    pub key: [u8; 32],
    pub not_before: i64,
    pub not_after: i64,
}

/// The server's certificate-signing key.
pub struct Issuer {
    key: SigningKey,
}

impl Issuer {
    pub fn from_seed(seed: &[u8; 32]) -> Issuer {
        Issuer {
            key: SigningKey::from_bytes(seed),
        }
    }

    pub fn public_key(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    pub fn issue(&self, request: CertificateRequest, now: i64) -> SignedCertificate {
        let cert = Certificate {
            serial: Serial::random(),
            issuer: key_id(&self.public_key()),
            user: request.user,
            role: request.role,
            wards: request.wards,
            device: request.device,
            key: request.key,
            issued_at: now,
            not_before: request.not_before,
            not_after: request.not_after,
        };
        let body = encode_body(&cert);
        let signature = sign(&self.key, context::CERTIFICATE, &body);
        SignedCertificate {
            cert,
            body,
            signature,
        }
    }
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Issuer({})", hex::encode(key_id(&self.public_key())))
    }
}

/// An issuer key's id: the first 8 bytes of SHA-256 of its public key.
pub fn key_id(public_key: &[u8; 32]) -> [u8; 8] {
    let digest = Sha256::digest(public_key);
    let mut id = [0u8; 8];
    id.copy_from_slice(&digest[..8]);
    id
}

fn malformed(what: &'static str, reason: &'static str) -> TrustError {
    TrustError::Malformed { what, reason }
}

const FIELDS: usize = 11;

fn encode_body(c: &Certificate) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    let mut e = Encoder::new(&mut out);
    let written = (|| -> Result<(), minicbor::encode::Error<std::convert::Infallible>> {
        e.map(FIELDS as u64)?;
        e.str("v")?.u8(1)?;
        e.str("serial")?.bytes(&c.serial.0)?;
        e.str("issuer")?.bytes(&c.issuer)?;
        e.str("user")?.str(&c.user)?;
        e.str("role")?.str(c.role.token())?;
        e.str("wards")?.array(c.wards.len() as u64)?;
        for w in &c.wards {
            e.str(w)?;
        }
        e.str("device")?.bytes(&c.device.0)?;
        e.str("key")?.bytes(&c.key)?;
        e.str("issued_at")?.i64(c.issued_at)?;
        e.str("not_before")?.i64(c.not_before)?;
        e.str("not_after")?.i64(c.not_after)?;
        Ok(())
    })();
    // Writing to a Vec cannot fail.
    debug_assert!(written.is_ok());
    out
}

fn decode_body(body: &[u8]) -> Result<Certificate, TrustError> {
    let bad = |reason| malformed("certificate", reason);
    let mut d = Decoder::new(body);
    if d.map().map_err(|_| bad("body is not a map"))? != Some(FIELDS as u64) {
        return Err(bad("body has the wrong number of fields"));
    }
    let expect = |key: &str, d: &mut Decoder<'_>| -> Result<(), TrustError> {
        match d.str() {
            Ok(k) if k == key => Ok(()),
            _ => Err(bad("fields out of order or unknown")),
        }
    };
    expect("v", &mut d)?;
    if d.u8().map_err(|_| bad("bad version"))? != 1 {
        return Err(bad("unknown version"));
    }
    expect("serial", &mut d)?;
    let serial = Serial(fixed(d.bytes(), "certificate", "bad serial")?);
    expect("issuer", &mut d)?;
    let issuer = fixed(d.bytes(), "certificate", "bad issuer")?;
    expect("user", &mut d)?;
    let user = d.str().map_err(|_| bad("bad user"))?.to_string();
    crate::chart::check_identifier("user", &user).map_err(|_| bad("bad user"))?;
    expect("role", &mut d)?;
    let role =
        Role::from_token(d.str().map_err(|_| bad("bad role"))?).map_err(|_| bad("bad role"))?;
    expect("wards", &mut d)?;
    let n = d
        .array()
        .map_err(|_| bad("bad wards"))?
        .ok_or(bad("bad wards"))?;
    if n as usize > MAX_WARDS {
        return Err(bad("too many wards"));
    }
    let mut wards = Vec::with_capacity(n as usize);
    for _ in 0..n {
        wards.push(d.str().map_err(|_| bad("bad ward"))?.to_string());
    }
    expect("device", &mut d)?;
    let device = DeviceId(fixed(d.bytes(), "certificate", "bad device")?);
    expect("key", &mut d)?;
    let key = fixed(d.bytes(), "certificate", "bad key")?;
    expect("issued_at", &mut d)?;
    let issued_at = d.i64().map_err(|_| bad("bad time"))?;
    expect("not_before", &mut d)?;
    let not_before = d.i64().map_err(|_| bad("bad time"))?;
    expect("not_after", &mut d)?;
    let not_after = d.i64().map_err(|_| bad("bad time"))?;
    if d.position() != body.len() {
        return Err(bad("trailing bytes in body"));
    }
    if not_after < not_before {
        return Err(bad("validity ends before it starts"));
    }
    Ok(Certificate {
        serial,
        issuer,
        user,
        role,
        wards,
        device,
        key,
        issued_at,
        not_before,
        not_after,
    })
}
