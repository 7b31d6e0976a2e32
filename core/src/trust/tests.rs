use automerge::ChangeHash;
use minicbor::Decoder;
use proptest::prelude::*;

use super::*;
use crate::chart::{ChartId, Role};

fn device(n: u8) -> DeviceKey {
    DeviceKey::from_secret(&[n; 32]).unwrap()
}

fn issuer() -> Issuer {
    Issuer::from_seed(&[9; 32])
}

fn certify(issuer: &Issuer, key: &UnlockedKey, device: &DeviceKey) -> SignedCertificate {
    issuer.issue(
        CertificateRequest {
            user: key.user().to_string(),
            role: Role::Nurse,
            wards: vec!["4west".into()],
            device: device.id(),
            key: key.public_key(),
            not_before: 1_000,
            not_after: 1_000 + 7 * 86_400,
        },
        1_000,
    )
}

#[test]
fn a_device_key_is_its_secrets_and_nothing_else() {
    assert_eq!(device(1).id(), device(1).id());
    assert_ne!(device(1).id(), device(2).id());
    assert_eq!(
        DeviceId::parse(&device(1).id().to_string()),
        Ok(device(1).id())
    );
    assert_eq!(
        DeviceKey::from_secret(&[1; 16]).unwrap_err(),
        TrustError::BadSecret(16)
    );
    let challenge = b"server nonce";
    let sig = device(1).sign_challenge(challenge);
    assert_eq!(
        verify_device(&device(1).public_key(), challenge, &sig),
        Ok(())
    );
    assert_eq!(
        verify_device(&device(2).public_key(), challenge, &sig),
        Err(TrustError::BadSignature)
    );
    // A device's challenge signature is not a proof of possession of a personal key.
    assert_eq!(
        verify_possession(&device(1).public_key(), challenge, &sig),
        Err(TrustError::BadSignature)
    );
}

#[test]
fn a_certificate_reads_back_as_issued_and_only_under_its_issuer() {
    let issuer = issuer();
    let d = device(1);
    let key = UnlockedKey::generate("rn.park");
    let signed = certify(&issuer, &key, &d);
    let bytes = signed.to_bytes();
    let read = SignedCertificate::from_bytes(&bytes, &[issuer.public_key()]).unwrap();
    assert_eq!(read, signed);
    let c = read.certificate();
    assert_eq!(
        (c.user.as_str(), c.role, c.device),
        ("rn.park", Role::Nurse, d.id())
    );
    assert!(c.valid_at(1_000) && c.valid_at(1_000 + 7 * 86_400));
    assert!(!c.valid_at(999) && !c.valid_at(1_001 + 7 * 86_400));

    // Retired keys still verify what they issued; strangers' keys do not.
    let other = Issuer::from_seed(&[8; 32]);
    assert!(
        SignedCertificate::from_bytes(&bytes, &[other.public_key(), issuer.public_key()]).is_ok()
    );
    assert_eq!(
        SignedCertificate::from_bytes(&bytes, &[other.public_key()]),
        Err(TrustError::UnknownIssuer)
    );
    assert!(SignedCertificate::from_bytes(&[], &[issuer.public_key()]).is_err());
}

#[test]
fn a_change_proof_binds_the_change_the_chart_and_the_certificate() {
    let issuer = issuer();
    let d = device(1);
    let park = UnlockedKey::generate("rn.park");
    let park_cert = certify(&issuer, &park, &d);
    let park = park.certified(park_cert.certificate().serial);
    let lee = UnlockedKey::generate("rn.lee");
    let lee_cert = certify(&issuer, &lee, &d);
    let lee = lee.certified(lee_cert.certificate().serial);

    let chart = ChartId::random();
    let hash = ChangeHash([7; 32]);
    let proof = park.prove(chart, hash);
    assert_eq!(proof.verify(chart, park_cert.certificate()), Ok(()));
    // Another chart, another change.
    assert_eq!(
        proof.verify(ChartId::random(), park_cert.certificate()),
        Err(TrustError::BadSignature)
    );
    let moved = ChangeProof {
        hash: ChangeHash([8; 32]),
        ..proof.clone()
    };
    assert_eq!(
        moved.verify(chart, park_cert.certificate()),
        Err(TrustError::BadSignature)
    );
    // Park's signature presented under Lee's certificate (a forged author).
    let forged = ChangeProof {
        serial: lee.serial(),
        ..proof.clone()
    };
    assert_eq!(
        forged.verify(chart, lee_cert.certificate()),
        Err(TrustError::BadSignature)
    );
    // A proof checked against a certificate it does not name.
    assert!(matches!(
        proof.verify(chart, lee_cert.certificate()),
        Err(TrustError::NotThisKey { .. })
    ));
    assert_eq!(
        lee.prove(chart, hash).verify(chart, lee_cert.certificate()),
        Ok(())
    );
}

#[test]
fn a_proof_bundle_reads_back_as_written() {
    let issuer = issuer();
    let d = device(1);
    let key = UnlockedKey::generate("rn.park");
    let cert = certify(&issuer, &key, &d);
    let key = key.certified(cert.certificate().serial);
    let chart = ChartId::random();
    let bundle = ProofBundle {
        certs: vec![cert.to_bytes()],
        proofs: (0..3u8)
            .map(|i| key.prove(chart, ChangeHash([i; 32])))
            .collect(),
        grants: Vec::new(),
    };
    let bytes = bundle.to_bytes();
    let read = ProofBundle::decode(&mut Decoder::new(&bytes)).unwrap();
    assert_eq!(read, bundle);
    // ~130 B a proof on the wire (hash 32, serial 16, time 9, signature 64, framing).
    let per_proof = (bytes.len() - cert.to_bytes().len()) / 3;
    assert!((125..=135).contains(&per_proof), "{per_proof} B a proof");

    // A break-glass grant recorded offline travels in the same bundle.
    let (signed_at, signature) = key.sign_break_glass(&chart, "ETREAT", "code blue");
    let with_grant = ProofBundle {
        grants: vec![SignedGrant {
            serial: key.serial(),
            reason: "ETREAT".into(),
            text: "code blue".into(),
            signed_at,
            signature,
        }],
        ..bundle
    };
    let read = ProofBundle::decode(&mut Decoder::new(&with_grant.to_bytes())).unwrap();
    assert_eq!(read, with_grant);
    let g = &read.grants[0];
    let c = cert.certificate();
    assert_eq!(
        verify_break_glass(c, &chart, &g.reason, &g.text, g.signed_at, &g.signature),
        Ok(())
    );
    assert!(verify_break_glass(c, &chart, "BTG", &g.text, g.signed_at, &g.signature).is_err());
}

#[test]
fn a_sealed_key_opens_with_its_pin_on_its_device_only() {
    let d = device(1);
    let key = UnlockedKey::generate("rn.park").certified(Serial([3; 16]));
    let sealed = key
        .seal(&d, "246810", KdfParams::INSECURE_FOR_TESTS)
        .unwrap();
    let stored = SealedKey::from_bytes(&sealed.to_bytes()).unwrap();
    assert_eq!(stored, sealed);
    assert_eq!(stored.header().user, "rn.park");

    let opened = stored.unseal("246810", &d).unwrap();
    assert_eq!(opened.public_key(), key.public_key());
    assert_eq!(
        (opened.user(), opened.serial()),
        ("rn.park", Serial([3; 16]))
    );

    assert_eq!(
        stored.unseal("246811", &d).unwrap_err(),
        TrustError::WrongPin
    );
    assert_eq!(
        stored.unseal("12ab56", &d).unwrap_err(),
        TrustError::PinFormat
    );
    assert!(matches!(
        stored.unseal("246810", &device(2)),
        Err(TrustError::NotThisKey { .. })
    ));
    for pin in ["", "12345", "1234567890123", "12 456", "１２３４５６"] {
        assert_eq!(check_pin(pin), Err(TrustError::PinFormat), "{pin:?}");
    }
    assert!(key.seal(&d, "1234", KdfParams::INSECURE_FOR_TESTS).is_err());
}

#[test]
fn a_sealed_key_moved_to_another_person_does_not_open() {
    let d = device(1);
    let key = UnlockedKey::generate("rn.park").certified(Serial([3; 16]));
    let sealed = key
        .seal(&d, "246810", KdfParams::INSECURE_FOR_TESTS)
        .unwrap();
    // Rewrite the header's user (same length, so the rest stays in place): the header is the
    // cipher's associated data.
    let bytes = sealed.to_bytes();
    let at = bytes.windows(7).position(|w| w == b"rn.park").unwrap();
    let mut moved = bytes.clone();
    moved[at..at + 7].copy_from_slice(b"rn.leex");
    let moved = SealedKey::from_bytes(&moved).unwrap();
    assert_eq!(moved.header().user, "rn.leex");
    assert_eq!(
        moved.unseal("246810", &d).unwrap_err(),
        TrustError::WrongPin
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any one byte of a certificate changed: it is refused, never read as something else.
    #[test]
    fn a_certificate_with_any_byte_changed_is_refused(at in any::<prop::sample::Index>(), flip in 1u8..=255) {
        let issuer = issuer();
        let d = device(1);
        let key = UnlockedKey::generate("rn.park");
        let mut bytes = certify(&issuer, &key, &d).to_bytes();
        let i = at.index(bytes.len());
        bytes[i] ^= flip;
        prop_assert!(SignedCertificate::from_bytes(&bytes, &[issuer.public_key()]).is_err());
    }

    /// Arbitrary bytes never panic the readers.
    #[test]
    fn arbitrary_bytes_are_refused_without_panicking(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = SignedCertificate::from_bytes(&bytes, &[issuer().public_key()]);
        let _ = ProofBundle::decode(&mut Decoder::new(&bytes));
        let _ = SealedKey::from_bytes(&bytes);
    }
}
