//! A person's signing key at rest on a device, sealed under their PIN: XChaCha20-Poly1305
//! with a key from Argon2id over the PIN, peppered with the device secret (which lives in the
//! platform's key store, not in the database). The header (who, which certificate, which
//! device, the derivation's parameters, salt and nonce) is the cipher's associated data, so a
//! sealed key cannot be moved to another person, certificate or device, and its parameters
//! cannot be changed, without the PIN check failing.
//!
//! A PIN of 6 digits alone is a million guesses: what protects the key is the pepper (a copy
//! of the database is useless away from the tablet) and the attempt limit the store keeps.

use argon2::{Algorithm, Argon2, Params, Version};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use ed25519_dalek::SigningKey;
use minicbor::{Decoder, Encoder};
use zeroize::Zeroizing;

use super::{context, fixed, sign, ChangeProof, DeviceId, DeviceKey, Serial, TrustError};
use crate::chart::ChartId;

/// Argon2id's cost: memory in KiB, passes, lanes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfParams {
    pub m_kib: u32,
    pub t: u32,
    pub p: u32,
}

impl KdfParams {
    /// 64 MiB, 3 passes: a fraction of a second on a mid-range tablet.
    pub const DEFAULT: KdfParams = KdfParams {
        m_kib: 64 * 1024,
        t: 3,
        p: 1,
    };
    /// OWASP's floor (19 MiB, 2 passes), for tablets short of memory.
    pub const MINIMUM: KdfParams = KdfParams {
        m_kib: 19 * 1024,
        t: 2,
        p: 1,
    };
    /// Cheap enough for tests to unlock many times. Never for real devices: with it a PIN
    /// falls to a brute force in seconds once the pepper is known.
    pub const INSECURE_FOR_TESTS: KdfParams = KdfParams {
        m_kib: 64,
        t: 1,
        p: 1,
    };

    fn check(&self) -> Result<Params, TrustError> {
        // Bounds on what a header may ask of this device before anything is checked.
        if self.m_kib > 1 << 20 || self.t == 0 || self.t > 16 || self.p == 0 || self.p > 4 {
            return Err(TrustError::KdfParams);
        }
        Params::new(self.m_kib, self.t, self.p, Some(32)).map_err(|_| TrustError::KdfParams)
    }
}

/// 6 to 12 ASCII digits.
pub fn check_pin(pin: &str) -> Result<(), TrustError> {
    if (6..=12).contains(&pin.len()) && pin.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err(TrustError::PinFormat)
    }
}

/// What a sealed key says about itself, readable without the PIN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealHeader {
    pub user: String,
    pub serial: Serial,
    pub device: DeviceId,
    pub kdf: KdfParams,
    salt: [u8; 16],
    nonce: [u8; 24],
}

impl SealHeader {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        let mut e = Encoder::new(&mut out);
        let _ = (|| -> Result<(), minicbor::encode::Error<std::convert::Infallible>> {
            e.map(7)?;
            e.str("v")?.u8(1)?;
            e.str("user")?.str(&self.user)?;
            e.str("serial")?.bytes(&self.serial.0)?;
            e.str("device")?.bytes(&self.device.0)?;
            e.str("kdf")?
                .array(3)?
                .u32(self.kdf.m_kib)?
                .u32(self.kdf.t)?
                .u32(self.kdf.p)?;
            e.str("salt")?.bytes(&self.salt)?;
            e.str("nonce")?.bytes(&self.nonce)?;
            Ok(())
        })();
        out
    }

    fn decode(bytes: &[u8]) -> Result<SealHeader, TrustError> {
        let bad = |reason| TrustError::Malformed {
            what: "sealed key",
            reason,
        };
        let mut d = Decoder::new(bytes);
        if d.map().map_err(|_| bad("header is not a map"))? != Some(7) {
            return Err(bad("header has the wrong fields"));
        }
        let key = |k: &str, d: &mut Decoder<'_>| match d.str() {
            Ok(got) if got == k => Ok(()),
            _ => Err(bad("header fields out of order")),
        };
        key("v", &mut d)?;
        if d.u8().map_err(|_| bad("bad version"))? != 1 {
            return Err(bad("unknown version"));
        }
        key("user", &mut d)?;
        let user = d.str().map_err(|_| bad("bad user"))?.to_string();
        key("serial", &mut d)?;
        let serial = Serial(fixed(d.bytes(), "sealed key", "bad serial")?);
        key("device", &mut d)?;
        let device = DeviceId(fixed(d.bytes(), "sealed key", "bad device")?);
        key("kdf", &mut d)?;
        if d.array().map_err(|_| bad("bad kdf"))? != Some(3) {
            return Err(bad("bad kdf"));
        }
        let mut n = || d.u32().map_err(|_| bad("bad kdf"));
        let kdf = KdfParams {
            m_kib: n()?,
            t: n()?,
            p: n()?,
        };
        key("salt", &mut d)?;
        let salt = fixed(d.bytes(), "sealed key", "bad salt")?;
        key("nonce", &mut d)?;
        let nonce = fixed(d.bytes(), "sealed key", "bad nonce")?;
        if d.position() != bytes.len() {
            return Err(bad("trailing bytes in header"));
        }
        Ok(SealHeader {
            user,
            serial,
            device,
            kdf,
            salt,
            nonce,
        })
    }
}

/// A sealed signing key, as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedKey {
    header: SealHeader,
    header_bytes: Vec<u8>,
    ciphertext: Vec<u8>,
}

impl SealedKey {
    /// Seals `key` (a person's signing key under certificate `serial`) on `device` under `pin`.
    pub fn seal(
        key: &SigningKey,
        user: &str,
        serial: Serial,
        device: &DeviceKey,
        pin: &str,
        kdf: KdfParams,
    ) -> Result<SealedKey, TrustError> {
        check_pin(pin)?;
        let header = SealHeader {
            user: user.to_string(),
            serial,
            device: device.id(),
            kdf,
            salt: super::random(),
            nonce: super::random(),
        };
        let header_bytes = header.encode();
        let cipher = cipher(pin, device, &header)?;
        let seed = Zeroizing::new(key.to_bytes());
        let ciphertext = cipher
            .encrypt(
                &XNonce::from(header.nonce),
                Payload {
                    msg: seed.as_slice(),
                    aad: &header_bytes,
                },
            )
            .map_err(|_| TrustError::KdfParams)?;
        Ok(SealedKey {
            header,
            header_bytes,
            ciphertext,
        })
    }

    pub fn header(&self) -> &SealHeader {
        &self.header
    }

    /// Opens the seal. A wrong PIN, another device's secret, or any change to the stored
    /// bytes all fail the same way: [`TrustError::WrongPin`]. Counting attempts is the
    /// caller's (the store's) job, before it calls this.
    pub fn unseal(&self, pin: &str, device: &DeviceKey) -> Result<UnlockedKey, TrustError> {
        check_pin(pin)?;
        if self.header.device != device.id() {
            return Err(TrustError::NotThisKey { what: "a device" });
        }
        let cipher = cipher(pin, device, &self.header)?;
        let seed = Zeroizing::new(
            cipher
                .decrypt(
                    &XNonce::from(self.header.nonce),
                    Payload {
                        msg: &self.ciphertext,
                        aad: &self.header_bytes,
                    },
                )
                .map_err(|_| TrustError::WrongPin)?,
        );
        let seed: [u8; 32] = seed
            .as_slice()
            .try_into()
            .map_err(|_| TrustError::WrongPin)?;
        Ok(UnlockedKey {
            key: SigningKey::from_bytes(&seed),
            serial: self.header.serial,
            user: self.header.user.clone(),
        })
    }

    /// `{"h": header, "ct": ciphertext}`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.header_bytes.len() + self.ciphertext.len() + 8);
        let mut e = Encoder::new(&mut out);
        let _ = e
            .map(2)
            .and_then(|e| e.str("h"))
            .and_then(|e| e.bytes(&self.header_bytes))
            .and_then(|e| e.str("ct"))
            .and_then(|e| e.bytes(&self.ciphertext));
        out
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<SealedKey, TrustError> {
        let bad = |reason| TrustError::Malformed {
            what: "sealed key",
            reason,
        };
        let mut d = Decoder::new(bytes);
        if d.map().map_err(|_| bad("not a map"))? != Some(2) {
            return Err(bad("not a map of two entries"));
        }
        if d.str().ok() != Some("h") {
            return Err(bad("no header"));
        }
        let header_bytes = d.bytes().map_err(|_| bad("bad header"))?.to_vec();
        if d.str().ok() != Some("ct") {
            return Err(bad("no ciphertext"));
        }
        let ciphertext = d.bytes().map_err(|_| bad("bad ciphertext"))?.to_vec();
        if d.position() != bytes.len() {
            return Err(bad("trailing bytes"));
        }
        Ok(SealedKey {
            header: SealHeader::decode(&header_bytes)?,
            header_bytes,
            ciphertext,
        })
    }
}

fn cipher(
    pin: &str,
    device: &DeviceKey,
    header: &SealHeader,
) -> Result<XChaCha20Poly1305, TrustError> {
    let params = header.kdf.check()?;
    let argon =
        Argon2::new_with_secret(device.pepper(), Algorithm::Argon2id, Version::V0x13, params)
            .map_err(|_| TrustError::KdfParams)?;
    let mut key = Zeroizing::new([0u8; 32]);
    argon
        .hash_password_into(pin.as_bytes(), &header.salt, key.as_mut())
        .map_err(|_| TrustError::KdfParams)?;
    Ok(XChaCha20Poly1305::new(&Key::from(*key)))
}

/// A person's signing key, unsealed: held only while they are signed in (the key material is
/// wiped when this is dropped).
pub struct UnlockedKey {
    key: SigningKey,
    serial: Serial,
    user: String,
}

impl UnlockedKey {
    /// A new key pair for a first sign-in; sealed once the server has certified it.
    pub fn generate(user: &str) -> UnlockedKey {
        let seed = Zeroizing::new(super::random::<32>());
        UnlockedKey {
            key: SigningKey::from_bytes(&seed),
            serial: Serial([0; 16]),
            user: user.to_string(),
        }
    }

    /// The same key, now certified under `serial`.
    pub fn certified(self, serial: Serial) -> UnlockedKey {
        UnlockedKey { serial, ..self }
    }

    pub fn user(&self) -> &str {
        &self.user
    }

    pub fn serial(&self) -> Serial {
        self.serial
    }

    pub fn public_key(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    pub fn seal(
        &self,
        device: &DeviceKey,
        pin: &str,
        kdf: KdfParams,
    ) -> Result<SealedKey, TrustError> {
        SealedKey::seal(&self.key, &self.user, self.serial, device, pin, kdf)
    }

    /// Proves this person made change `hash` in `chart`, now.
    pub fn prove(&self, chart: ChartId, hash: automerge::ChangeHash) -> ChangeProof {
        let now = crate::chart::Timestamp::now().unix();
        ChangeProof::sign(&self.key, self.serial, chart, hash, now)
    }

    /// Signs a request for break-glass access to `chart`, now; (signed_at, signature).
    pub fn sign_break_glass(&self, chart: &ChartId, reason: &str, text: &str) -> (i64, [u8; 64]) {
        let now = crate::chart::Timestamp::now().unix();
        let m = super::break_glass_message(chart, reason, text, now);
        (now, sign(&self.key, context::BREAK_GLASS, &m))
    }

    /// Signs a server's challenge, showing that whoever asks to certify this key holds it.
    pub fn sign_possession(&self, challenge: &[u8]) -> [u8; 64] {
        sign(&self.key, context::POSSESSION, challenge)
    }
}

impl std::fmt::Debug for UnlockedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "UnlockedKey({}, {})", self.user, self.serial)
    }
}
