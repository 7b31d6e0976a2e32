//! Bearer tokens: HS256 JWTs naming a user, a role and the wards they may see, signed with a
//! key the server makes in its data directory on first use (`token.key`, 32 random bytes,
//! readable by the server's user only). The key never leaves the data directory; rotating it
//! (deleting the file) invalidates every token.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chartsync_core::chart::Role;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// Wards: `*` grants every ward (the records office).
pub const ALL_WARDS: &str = "*";

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Claims {
    sub: String,
    role: String,
    wards: Vec<String>,
    iat: u64,
    exp: u64,
    /// An enrolled tablet's session: its device id. Every change it sends must carry a proof
    /// of authorship; it reads as ward staff on its wards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    dev: Option<String>,
    /// A revoked tablet's session: everything it sends is held, nothing is sent back.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    q: bool,
}

/// Who a verified token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    pub user: String,
    pub role: Role,
    pub wards: Vec<String>,
    /// When the token expires (seconds since the epoch): a sync session ends then.
    pub expires_at: u64,
    /// Set for an enrolled tablet's session (docs/adr/0008-shared-tablets.md).
    pub device: Option<chartsync_core::trust::DeviceId>,
    /// A revoked tablet in quarantine: it may still hand over what it holds (all of it is
    /// held for review), and it reads nothing.
    pub quarantined: bool,
}

impl Access {
    /// How long until the token expires.
    pub fn remaining(&self) -> Duration {
        Duration::from_secs(self.expires_at.saturating_sub(now_secs()))
    }

    pub fn may_see_ward(&self, ward: &str) -> bool {
        !self.quarantined && self.wards.iter().any(|w| w == ward || w == ALL_WARDS)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("no bearer token")]
    Missing,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid")]
    Invalid,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("the key file {path} is not 32 bytes; it was left as it is (deleting it makes a new key, which invalidates every token or certificate the old one signed)")]
    BadKey { path: String },
    #[error("the token key could not be made: {0}")]
    Random(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

pub struct Keys {
    encoding: EncodingKey,
    /// The current key's id: the first 8 bytes of SHA-256 of it, in hex (`kid`).
    kid: String,
    /// The current key and the retired ones still honoured, by id.
    decoding: Vec<(String, DecodingKey)>,
}

/// A key's id, as tokens name it.
fn key_id(secret: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(&sha2::Sha256::digest(secret)[..8])
}

/// Retired keys: `token.key.<kid>.retired`, honoured for the tokens they signed until an
/// administrator deletes them (tokens last at most 30 days).
const RETIRED_SUFFIX: &str = ".retired";

impl Keys {
    /// The data directory's key, made if there is none, and the retired keys kept beside it.
    pub fn load_or_create(data_dir: &Path) -> Result<Keys, KeyError> {
        let secret = secret_file(&data_dir.join("token.key"))?;
        let kid = key_id(&secret);
        let mut decoding = vec![(kid.clone(), DecodingKey::from_secret(&secret))];
        for entry in std::fs::read_dir(data_dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("token.key.") && name.ends_with(RETIRED_SUFFIX) {
                let old = std::fs::read(entry.path())?;
                if old.len() != 32 {
                    return Err(KeyError::BadKey {
                        path: entry.path().display().to_string(),
                    });
                }
                decoding.push((key_id(&old), DecodingKey::from_secret(&old)));
            }
        }
        Ok(Keys {
            encoding: EncodingKey::from_secret(&secret),
            kid,
            decoding,
        })
    }

    /// Retires the current key (kept to verify the tokens it signed) and makes a new one for
    /// all new tokens. A running server takes it up when it restarts. The new key's id.
    pub fn rotate(data_dir: &Path) -> Result<String, KeyError> {
        let current = data_dir.join("token.key");
        let secret = secret_file(&current)?;
        let retired = data_dir.join(format!("token.key.{}{RETIRED_SUFFIX}", key_id(&secret)));
        std::fs::rename(&current, &retired)?;
        let fresh = secret_file(&current)?;
        Ok(key_id(&fresh))
    }

    /// A token for `user` in `role` on `wards`, valid for `ttl`.
    pub fn issue(&self, user: &str, role: Role, wards: &[String], ttl: Duration) -> String {
        let now = now_secs();
        let claims = Claims {
            sub: user.to_string(),
            role: role.token().to_string(),
            wards: wards.to_vec(),
            iat: now,
            exp: now + ttl.as_secs(),
            dev: None,
            q: false,
        };
        self.sign(&claims)
    }

    fn sign(&self, claims: &Claims) -> String {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(self.kid.clone());
        // HS256 over serialisable claims cannot fail.
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap_or_default()
    }

    /// A session token for an enrolled tablet on its wards: it reads as ward staff (a nurse),
    /// and writes only what its signed-in people prove.
    pub fn issue_device(
        &self,
        device: chartsync_core::trust::DeviceId,
        wards: &[String],
        ttl: Duration,
        quarantined: bool,
    ) -> String {
        let now = now_secs();
        let claims = Claims {
            sub: device.to_string(),
            role: Role::Nurse.token().to_string(),
            wards: wards.to_vec(),
            iat: now,
            exp: now + ttl.as_secs(),
            dev: Some(device.to_string()),
            q: quarantined,
        };
        self.sign(&claims)
    }

    /// An access token for a Bulk Data client (SMART Backend Services), valid for `ttl`: it
    /// opens the Bulk Data endpoints only (its role is no person's, so nothing else takes it).
    pub fn issue_bulk(&self, client: &str, ttl: Duration) -> String {
        let now = now_secs();
        self.sign(&Claims {
            sub: client.to_string(),
            role: BULK_ROLE.to_string(),
            wards: vec![ALL_WARDS.to_string()],
            iat: now,
            exp: now + ttl.as_secs(),
            dev: None,
            q: false,
        })
    }

    /// The client a Bulk Data access token was issued to.
    pub fn verify_bulk(&self, token: &str) -> Result<String, AuthError> {
        let c = self.claims(token)?;
        if c.role != BULK_ROLE || c.sub.trim().is_empty() {
            return Err(AuthError::Invalid);
        }
        Ok(c.sub)
    }

    pub fn verify(&self, token: &str) -> Result<Access, AuthError> {
        let c = self.claims(token)?;
        let role = Role::from_token(&c.role).map_err(|_| AuthError::Invalid)?;
        if c.sub.trim().is_empty() || c.wards.is_empty() {
            return Err(AuthError::Invalid);
        }
        let device = match c.dev.as_deref() {
            Some(d) => {
                Some(chartsync_core::trust::DeviceId::parse(d).map_err(|_| AuthError::Invalid)?)
            }
            None => None,
        };
        Ok(Access {
            user: c.sub,
            role,
            wards: c.wards,
            expires_at: c.exp,
            device,
            quarantined: c.q,
        })
    }

    /// A token's claims, once its signature (by one of this server's keys) and time check.
    fn claims(&self, token: &str) -> Result<Claims, AuthError> {
        let mut validation = Validation::new(Algorithm::HS256);
        // This server issued the token by its own clock: no skew to allow for. A leeway would
        // let a device whose token has just expired connect again, only for the session to end
        // at once (its expiry has passed), over and over until the leeway ran out.
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub"]);
        // The key the token names; a token from before key ids names none: the current key.
        let kid = jsonwebtoken::decode_header(token)
            .map_err(|_| AuthError::Invalid)?
            .kid;
        let key = match kid {
            Some(kid) => {
                &self
                    .decoding
                    .iter()
                    .find(|(id, _)| *id == kid)
                    .ok_or(AuthError::Invalid)?
                    .1
            }
            None => &self.decoding[0].1,
        };
        let data = jsonwebtoken::decode::<Claims>(token, key, &validation).map_err(|e| match e
            .kind()
        {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
            _ => AuthError::Invalid,
        })?;
        let c = data.claims;
        // A token in its last second would open a session that ends at once.
        if c.exp <= now_secs() {
            return Err(AuthError::Expired);
        }
        Ok(c)
    }
}

/// A 32-byte secret kept in a file readable by the server's user only, made on first use. A
/// file of another size is refused and left as it is.
pub(crate) fn secret_file(path: &Path) -> Result<[u8; 32], KeyError> {
    let secret = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut secret = [0u8; 32];
            getrandom::fill(&mut secret).map_err(|e| KeyError::Random(e.to_string()))?;
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            match options.open(path) {
                Ok(mut f) => {
                    f.write_all(&secret)?;
                    f.sync_all()?;
                    secret.to_vec()
                }
                // Another process made it first: use theirs.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => std::fs::read(path)?,
                Err(e) => return Err(e.into()),
            }
        }
        Err(e) => return Err(e.into()),
    };
    secret.try_into().map_err(|_| KeyError::BadKey {
        path: path.display().to_string(),
    })
}

pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `90s`, `30m`, `12h`, `7d`: at most 30 days.
/// The role in a Bulk Data client's access token: no person's.
pub const BULK_ROLE: &str = "system/bulk-export";

pub fn parse_ttl(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d.is_zero() || d.as_secs() > 30 * 86_400 {
        return Err("a token lasts between 1 second and 30 days".into());
    }
    Ok(d)
}

/// How long a Bulk Data export's files are kept once it finishes: a minute to 30 days.
pub fn parse_bulk_files_ttl(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d.as_secs() < 60 || d.as_secs() > 30 * 86_400 {
        return Err("an export's files are kept between 1 minute and 30 days".into());
    }
    Ok(d)
}

/// How long a tablet keeps a chart that left its wards: 0s (removed as soon as the server
/// has it all) to 365d.
pub fn parse_purge_after(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d.as_secs() > 365 * 86_400 {
        return Err("a chart is kept on a tablet at most 365 days after it left".into());
    }
    Ok(d)
}

/// A duration as people write it on a command line: 90s, 30m, 12h, 7d (a bare number is
/// hours).
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (number, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 90s, 30m, 12h or 7d"))?;
    let secs = match unit {
        "s" => n,
        "m" => n.saturating_mul(60),
        "h" | "" => n.saturating_mul(3600),
        "d" => n.saturating_mul(86_400),
        _ => return Err(format!("{s:?}: the unit must be s, m, h or d")),
    };
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_carries_its_user_role_and_wards_and_expires() {
        let dir = tempfile::tempdir().unwrap();
        let keys = Keys::load_or_create(dir.path()).unwrap();
        let wards = vec!["4west".to_string()];
        let token = keys.issue("rn.park", Role::Nurse, &wards, Duration::from_secs(3600));
        let access = keys.verify(&token).unwrap();
        assert_eq!(
            (access.user.as_str(), access.role, &access.wards),
            ("rn.park", Role::Nurse, &wards)
        );
        assert!(access.expires_at > now_secs() + 3500);
        assert!(access.may_see_ward("4west") && !access.may_see_ward("icu"));

        // The same key on the next start; another data directory's key refuses it.
        let again = Keys::load_or_create(dir.path()).unwrap();
        assert!(again.verify(&token).is_ok());
        let other = tempfile::tempdir().unwrap();
        let stranger = Keys::load_or_create(other.path()).unwrap();
        assert_eq!(stranger.verify(&token), Err(AuthError::Invalid));

        // Expired an hour ago.
        let claims = Claims {
            sub: "rn.park".into(),
            role: "nurse".into(),
            wards,
            iat: now_secs() - 7200,
            exp: now_secs() - 3600,
            dev: None,
            q: false,
        };
        let old =
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &keys.encoding).unwrap();
        assert_eq!(keys.verify(&old), Err(AuthError::Expired));
        assert_eq!(keys.verify("not.a.token"), Err(AuthError::Invalid));
    }

    #[test]
    fn a_rotated_key_keeps_old_tokens_working_until_its_file_is_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let wards = vec!["4west".to_string()];
        let before = Keys::load_or_create(dir.path()).unwrap();
        let old = before.issue("rn.park", Role::Nurse, &wards, Duration::from_secs(3600));
        let kid = Keys::rotate(dir.path()).unwrap();
        assert_ne!(kid, before.kid);
        let after = Keys::load_or_create(dir.path()).unwrap();
        assert_eq!(after.kid, kid);
        assert!(
            after.verify(&old).is_ok(),
            "a token from before the rotation"
        );
        let new = after.issue("rn.park", Role::Nurse, &wards, Duration::from_secs(3600));
        assert!(after.verify(&new).is_ok());
        assert_eq!(
            before.verify(&new),
            Err(AuthError::Invalid),
            "the old key does not sign new"
        );
        // The retired key deleted: its tokens are no longer honoured.
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let path = entry.unwrap().path();
            if path.to_string_lossy().ends_with(".retired") {
                std::fs::remove_file(path).unwrap();
            }
        }
        let pruned = Keys::load_or_create(dir.path()).unwrap();
        assert_eq!(pruned.verify(&old), Err(AuthError::Invalid));
        assert!(pruned.verify(&new).is_ok());
    }

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(parse_ttl("12h"), Ok(Duration::from_secs(43_200)));
        assert_eq!(parse_ttl("30m"), Ok(Duration::from_secs(1_800)));
        assert_eq!(parse_ttl("7d"), Ok(Duration::from_secs(604_800)));
        assert!(parse_ttl("0h").is_err());
        assert!(parse_ttl("31d").is_err());
        assert!(parse_ttl("12 hours").is_err());
        assert!(parse_ttl("h").is_err());
    }

    #[test]
    fn a_damaged_key_file_is_refused_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token.key"), b"short").unwrap();
        assert!(matches!(
            Keys::load_or_create(dir.path()),
            Err(KeyError::BadKey { .. })
        ));
        assert_eq!(
            std::fs::read(dir.path().join("token.key")).unwrap(),
            b"short"
        );
    }
}
