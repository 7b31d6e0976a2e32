//! Who is signed in to the console at which browser: kept in the server's memory only, so a
//! restart signs everyone out (docs/adr/0010-records-console.md). A session ends after
//! `idle` without a request (45 CFR 164.312(a)(2)(iii), automatic logoff), on sign-out, and
//! when the person's directory entry is revoked or changes role.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chartsync_core::chart::Role;
use sha2::{Digest, Sha256};

/// Sessions open at once, at most: a sign-in past this first forgets the idle ones, and is
/// refused if none is.
const MAX_SESSIONS: usize = 10_000;

/// One signed-in person at one browser.
#[derive(Debug, Clone)]
pub struct Session {
    pub user: String,
    pub role: Role,
    pub wards: Vec<String>,
    /// The token every form of this session carries back (a cross-site form has not got it).
    pub csrf: String,
    /// What the last form did, shown once on the next page ("3 deficiencies assigned").
    pub flash: Option<String>,
    last_seen: Instant,
}

/// What a request's session cookie names.
#[derive(Debug)]
pub enum Found {
    Active(Session),
    /// It was open, and ended for want of use: the person is told so.
    Idle,
    /// None, unknown, or ended some other way.
    None,
}

pub struct Sessions {
    /// By the SHA-256 of the cookie's value: the table holds nothing a browser could present.
    open: Mutex<HashMap<[u8; 32], Session>>,
    idle: Duration,
}

fn key(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the system's random source");
    hex::encode(bytes)
}

impl Sessions {
    pub fn new(idle: Duration) -> Sessions {
        Sessions {
            open: Mutex::new(HashMap::new()),
            idle,
        }
    }

    pub fn idle(&self) -> Duration {
        self.idle
    }

    /// Opens a session; the cookie's value, or `None` when the server holds as many sessions
    /// as it will.
    pub fn open(&self, user: &str, role: Role, wards: Vec<String>) -> Option<(String, Session)> {
        let mut open = self.open.lock().unwrap();
        if open.len() >= MAX_SESSIONS {
            let idle = self.idle;
            open.retain(|_, s| s.last_seen.elapsed() < idle);
            if open.len() >= MAX_SESSIONS {
                return None;
            }
        }
        let id = random_token();
        let session = Session {
            user: user.to_string(),
            role,
            wards,
            csrf: random_token(),
            flash: None,
            last_seen: Instant::now(),
        };
        open.insert(key(&id), session.clone());
        Some((id, session))
    }

    /// The session `id` names, marked as used now; one idle too long is ended.
    pub fn touch(&self, id: &str) -> Found {
        let mut open = self.open.lock().unwrap();
        let k = key(id);
        match open.get_mut(&k) {
            Some(s) if s.last_seen.elapsed() < self.idle => {
                s.last_seen = Instant::now();
                let found = s.clone();
                // Shown once: the page this request renders carries it.
                s.flash = None;
                Found::Active(found)
            }
            Some(_) => {
                open.remove(&k);
                Found::Idle
            }
            None => Found::None,
        }
    }

    /// The session `id` names if it is active, without counting this as use (a page's own
    /// polling must not keep an unattended screen signed in).
    pub fn peek(&self, id: &str) -> Option<Session> {
        let open = self.open.lock().unwrap();
        open.get(&key(id))
            .filter(|s| s.last_seen.elapsed() < self.idle)
            .cloned()
    }

    /// Leaves a message for the session's next page.
    pub fn flash(&self, id: &str, message: String) {
        if let Some(s) = self.open.lock().unwrap().get_mut(&key(id)) {
            s.flash = Some(message);
        }
    }

    pub fn close(&self, id: &str) {
        self.open.lock().unwrap().remove(&key(id));
    }

    /// How many are open (idle ones not yet swept included).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.open.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_found_by_its_cookie_and_ends_at_sign_out() {
        let sessions = Sessions::new(Duration::from_secs(900));
        let (id, s) = sessions
            .open("him.jones", Role::Technician, vec!["4west".into()])
            .unwrap();
        assert_eq!(s.csrf.len(), 64);
        assert_ne!(id, s.csrf);
        match sessions.touch(&id) {
            Found::Active(found) => {
                assert_eq!(found.user, "him.jones");
                assert_eq!(found.csrf, s.csrf);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(sessions.touch("not-a-session"), Found::None));
        sessions.close(&id);
        assert!(matches!(sessions.touch(&id), Found::None));
        assert_eq!(sessions.len(), 0);
    }

    #[test]
    fn a_session_unused_for_the_idle_time_is_ended_and_said_to_be() {
        let sessions = Sessions::new(Duration::from_millis(50));
        let (id, _) = sessions
            .open("him.jones", Role::Technician, vec![])
            .unwrap();
        std::thread::sleep(Duration::from_millis(80));
        assert!(matches!(sessions.touch(&id), Found::Idle));
        // Ended, not just reported: the same cookie does not come back to life.
        assert!(matches!(sessions.touch(&id), Found::None));
    }
}
