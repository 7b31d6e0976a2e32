//! What proving authorship costs a tablet and the server (docs/adr/0008-shared-tablets.md),
//! per commit, as percentiles of many single operations in one run:
//! - signing a change's proof, and checking it;
//! - reading a certificate (its signature checked);
//! - a durable chart commit with and without its proof, side by side;
//! - opening a PIN seal at the two costs a tablet may choose;
//! - the bytes a proof adds to a sync frame.
//!
//! Run: `cargo bench -p chartsync-core --bench trust`

use std::time::{Duration, Instant};

use automerge::ChangeHash;
use chartsync_core::chart::*;
use chartsync_core::codes::CodeSystem;
use chartsync_core::store::{ChartStore, StoreOptions};
use chartsync_core::trust::*;

fn percentiles(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q) as usize].as_secs_f64() * 1e6;
    (at(0.5), at(0.99))
}

fn time(n: usize, mut f: impl FnMut(usize)) -> (f64, f64) {
    let samples = (0..n)
        .map(|i| {
            let t = Instant::now();
            f(i);
            t.elapsed()
        })
        .collect();
    percentiles(samples)
}

fn heart_rate(k: usize) -> NewEntry {
    NewEntry {
        kind: EntryKind::Observation,
        shift: Some(Shift::Night),
        effective_at: None,
        codes: vec![CodeInput::new(CodeSystem::Loinc, "8867-4")],
        value: Some(format!("{}", 60 + k % 60)),
        unit: Some("/min".into()),
        body: "Heart rate".into(),
    }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let device = DeviceKey::from_secret(&[7; 32]).unwrap();
    let issuer = Issuer::from_seed(&[9; 32]);
    let key = UnlockedKey::generate("rn.park");
    let cert = issuer.issue(
        CertificateRequest {
            user: "rn.park".into(),
            role: Role::Nurse,
            wards: vec!["4west".into()],
            device: device.id(),
            key: key.public_key(),
            not_before: 0,
            not_after: i64::MAX / 2,
        },
        0,
    );
    let key = key.certified(cert.certificate().serial);
    let chart = ChartId::random();
    const N: usize = 10_000;
    let hashes: Vec<ChangeHash> = (0..N)
        .map(|i| {
            let mut h = [0u8; 32];
            h[..8].copy_from_slice(&(i as u64).to_le_bytes());
            ChangeHash(h)
        })
        .collect();
    let mut proofs = Vec::with_capacity(N);
    let sign = time(N, |i| proofs.push(key.prove(chart, hashes[i])));
    let verify = time(N, |i| proofs[i].verify(chart, cert.certificate()).unwrap());
    let cert_bytes = cert.to_bytes();
    let issuers = [issuer.public_key()];
    let read_cert = time(N, |_| {
        SignedCertificate::from_bytes(&cert_bytes, &issuers).unwrap();
    });
    let bundle = |n: usize| {
        ProofBundle {
            certs: Vec::new(),
            proofs: proofs[..n].to_vec(),
            grants: Vec::new(),
        }
        .to_bytes()
        .len()
    };
    let per_proof = (bundle(1000) - bundle(0)) as f64 / 1000.0;

    // A durable commit of one observation, plain and signed, interleaved.
    let dir = tempfile::tempdir().unwrap();
    let store = ChartStore::open(dir.path().join("tablet.db"), StoreOptions::default()).unwrap();
    let staff = Staff::new("rn.park", Role::Nurse, device.id().to_string());
    let clerk = Staff::new("him.jones", Role::Technician, device.id().to_string());
    let id = store
        .create(
            Chart::create(
                NewPatient {
                    mrn: "MRN-1".into(),
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
                &clerk,
                Timestamp::now(),
            )
            .unwrap(),
        )
        .unwrap();
    const COMMITS: usize = 500;
    let (mut plain, mut signed) = (Vec::new(), Vec::new());
    for k in 0..COMMITS {
        let t = Instant::now();
        store
            .update(id, |c| c.add_entry(&staff, Timestamp::now(), heart_rate(k)))
            .unwrap();
        plain.push(t.elapsed());
        let t = Instant::now();
        store
            .update_signed(&key, id, |c| {
                c.add_entry(&staff, Timestamp::now(), heart_rate(k))
            })
            .unwrap();
        signed.push(t.elapsed());
    }
    let (plain, signed) = (percentiles(plain), percentiles(signed));

    // Opening a PIN seal.
    let seal = |kdf: KdfParams| {
        let sealed = key.seal(&device, "135790", kdf).unwrap();
        time(5, |_| {
            sealed.unseal("135790", &device).unwrap();
        })
    };
    let standard = seal(KdfParams::DEFAULT);
    let low = seal(KdfParams::MINIMUM);

    println!("\n## Proofs of authorship\n");
    println!("| measure | p50 | p99 |\n|---|---|---|");
    println!(
        "| sign a change's proof | {:.1} µs | {:.1} µs |",
        sign.0, sign.1
    );
    println!(
        "| check a proof's signature | {:.1} µs | {:.1} µs |",
        verify.0, verify.1
    );
    println!(
        "| read a certificate (signature checked) | {:.1} µs | {:.1} µs |",
        read_cert.0, read_cert.1
    );
    println!(
        "| durable commit of one observation, unsigned | {:.0} µs | {:.0} µs |",
        plain.0, plain.1
    );
    println!(
        "| the same, signed, proof stored in its transaction | {:.0} µs | {:.0} µs |",
        signed.0, signed.1
    );
    println!(
        "| open a PIN seal, standard (64 MiB, 3 passes) | {:.0} ms | {:.0} ms |",
        standard.0 / 1000.0,
        standard.1 / 1000.0
    );
    println!(
        "| open a PIN seal, low memory (19 MiB, 2 passes) | {:.0} ms | {:.0} ms |",
        low.0 / 1000.0,
        low.1 / 1000.0
    );
    println!("\nA proof adds {per_proof:.0} bytes to a sync frame (certificate {} bytes, once per connection).", cert_bytes.len());
}
