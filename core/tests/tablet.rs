//! A shared tablet's store without a server: what it holds back for want of a usable proof,
//! and what signing in signs.

mod common;

use std::sync::Arc;

use chartsync_core::chart::*;
use chartsync_core::store::*;
use chartsync_core::tablet::{EnrolResponse, Tablet};
use chartsync_core::trust::*;
use common::*;

/// A tablet enrolled with a server whose issuer is `issuer`, under `policy`.
fn tablet(dir: &tempfile::TempDir, issuer: &Issuer, policy: Policy) -> (Arc<ChartStore>, Tablet) {
    let store =
        Arc::new(ChartStore::open(dir.path().join("t.db"), StoreOptions::default()).unwrap());
    let secret = [7u8; 32];
    let device = DeviceKey::from_secret(&secret).unwrap();
    use base64::Engine;
    let answer = EnrolResponse {
        device: device.id().to_string(),
        label: "T-07".into(),
        wards: vec!["4west".into()],
        issuer_keys: vec![base64::engine::general_purpose::STANDARD.encode(issuer.public_key())],
        policy,
    };
    let tablet = Tablet::finish_enrolment(
        store.clone(),
        &secret,
        "http://server",
        &answer,
        KdfParams::INSECURE_FOR_TESTS,
    )
    .unwrap();
    (store, tablet)
}

fn certified(
    issuer: &Issuer,
    tablet: &Tablet,
    user: &str,
    valid: (i64, i64),
) -> (UnlockedKey, SignedCertificate) {
    let key = UnlockedKey::generate(user);
    let cert = issuer.issue(
        CertificateRequest {
            user: user.into(),
            role: Role::Nurse,
            wards: vec!["4west".into()],
            device: tablet.device(),
            key: key.public_key(),
            not_before: valid.0,
            not_after: valid.1,
        },
        valid.0,
    );
    (key.certified(cert.certificate().serial), cert)
}

#[test]
fn changes_under_a_long_ended_certificate_wait_until_their_author_signs_in_again() {
    let dir = tempfile::tempdir().unwrap();
    let issuer = Issuer::from_seed(&[9; 32]);
    let (store, tablet) = tablet(&dir, &issuer, Policy::default());
    let now = Timestamp::now().unix();
    let id = store.create(admitted()).unwrap();
    store
        .acknowledge(id, &store.read(id, |c| c.heads()).unwrap())
        .unwrap();

    // Charted under a certificate that ended four days ago (past the 72-hour grace).
    let (old_key, old_cert) = certified(
        &issuer,
        &tablet,
        "rn.park",
        (now - 10 * 86_400, now - 4 * 86_400),
    );
    let sealed = old_key
        .seal(
            &DeviceKey::from_secret(&[7u8; 32]).unwrap(),
            "135790",
            KdfParams::INSECURE_FOR_TESTS,
        )
        .unwrap();
    store.save_credential(&old_cert, &sealed).unwrap();
    let park = Staff::new("rn.park", Role::Nurse, tablet.device().to_string());
    store
        .update_signed(&old_key, id, |c| {
            c.add_entry(&park, Timestamp::now(), heart_rate(70))
        })
        .unwrap();
    let waiting = store.unproven_changes(id).unwrap();
    assert_eq!(
        waiting.len(),
        1,
        "a proof under a long-ended certificate does not count"
    );
    assert_eq!(
        waiting[0].1.as_ref().map(|a| a.user.as_str()),
        Some("rn.park")
    );

    // Someone else signing in signs nothing of hers.
    let (lee, _) = certified(&issuer, &tablet, "rn.lee", (now - 60, now + 86_400));
    assert!(store.sign_pending(&lee).unwrap().is_empty());
    assert_eq!(store.unproven_changes(id).unwrap().len(), 1);

    // She signs in again (a new certificate): her change is signed under it, and goes.
    let (new_key, new_cert) = certified(&issuer, &tablet, "rn.park", (now - 60, now + 86_400));
    let sealed = new_key
        .seal(
            &DeviceKey::from_secret(&[7u8; 32]).unwrap(),
            "135790",
            KdfParams::INSECURE_FOR_TESTS,
        )
        .unwrap();
    store.save_credential(&new_cert, &sealed).unwrap();
    let feed = store.subscribe();
    assert_eq!(store.sign_pending(&new_key).unwrap(), vec![id]);
    assert!(store.unproven_changes(id).unwrap().is_empty());
    assert_eq!(
        feed.try_recv().unwrap().id,
        id,
        "a running sync client hears of it"
    );
}

#[test]
fn a_session_locks_itself_after_the_idle_time_and_refuses_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let issuer = Issuer::from_seed(&[9; 32]);
    let (store, tablet) = tablet(
        &dir,
        &issuer,
        Policy {
            idle_lock_secs: 1,
            ..Policy::default()
        },
    );
    let device = DeviceKey::from_secret(&[7u8; 32]).unwrap();
    let now = Timestamp::now().unix();
    let (key, cert) = certified(&issuer, &tablet, "rn.park", (now - 60, now + 86_400));
    store
        .save_credential(
            &cert,
            &key.seal(&device, "135790", KdfParams::INSECURE_FOR_TESTS)
                .unwrap(),
        )
        .unwrap();
    let session = tablet.unlock("rn.park", "135790").unwrap();
    assert!(session.with_key(|_| ()).is_ok());
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert!(session.is_locked());
    assert!(matches!(
        session.with_key(|_| ()),
        Err(chartsync_core::tablet::TabletError::Locked { .. })
    ));
    // The PIN opens a new session.
    assert!(tablet
        .unlock("rn.park", "135790")
        .unwrap()
        .with_key(|_| ())
        .is_ok());
}
