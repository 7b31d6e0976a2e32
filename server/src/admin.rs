//! `chartsync-server staff|device|revoke`: the directory from the command line, on the data
//! directory's store (a running server sees the changes at once: it reads the directory from
//! the store on every sign-in). Every change is audited under `--by`.

use std::io::{BufRead, IsTerminal, Read};
use std::path::PathBuf;

use chartsync_core::chart::{Role, Timestamp};
use chartsync_core::store::{Actor, ChartStore, NewStaff, Revoked, Severity, StoreOptions};
use clap::Subcommand;

use crate::directory::{enrolment, hash_password};

#[derive(clap::Args)]
pub struct AdminArgs {
    /// The server's data directory.
    #[arg(long, global = true, default_value = "./chartsync-data")]
    data_dir: PathBuf,
    /// Who is at the keyboard: the audit trail names them.
    #[arg(long, global = true, env = "USER", default_value = "admin")]
    by: String,
    #[command(flatten)]
    store_key: crate::store_key::StoreKeyArgs,
    /// The servers' PostgreSQL database, when the store is there (as `serve --database-url`).
    #[arg(long, global = true, env = "CHARTSYNC_DATABASE_URL")]
    database_url: Option<String>,
}

#[derive(Subcommand)]
pub enum StaffCommand {
    /// Add a person to the directory, or change their role, wards or password.
    Add {
        #[arg(long)]
        user: String,
        /// technician, nurse, physician, coder, records_supervisor or admin.
        #[arg(long, value_parser = crate::parse_role)]
        role: Role,
        /// A ward; repeat for more; `*` for every ward.
        #[arg(long = "ward", required = true)]
        wards: Vec<String>,
        /// Read a password (at least 10 characters) from standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Import people from the hospital's directory: CSV with a header `user,role,wards`
    /// (wards separated by `;`), all or none.
    Import { file: PathBuf },
    /// List the directory.
    List,
}

#[derive(Subcommand)]
pub enum DeviceCommand {
    /// Print a one-time code a tablet redeems to enrol for these wards.
    Enroll {
        /// What is written on the tablet, e.g. T-07.
        #[arg(long)]
        label: String,
        #[arg(long = "ward", required = true)]
        wards: Vec<String>,
        /// Hours the code stays good.
        #[arg(long, default_value_t = 24)]
        valid_hours: u32,
    },
    /// List enrolled devices.
    List,
}

#[derive(clap::Args)]
pub struct RevokeArgs {
    /// person, certificate or device.
    #[arg(value_parser = ["person", "certificate", "device"])]
    kind: String,
    /// The user id, certificate serial or device id.
    subject: String,
    /// Why (kept in the audit trail).
    #[arg(long)]
    reason: String,
    /// Stolen, lost, or a PIN disclosed: hold everything it proves from now on, whatever
    /// time it claims.
    #[arg(long)]
    compromised: bool,
    /// From when (RFC 3339; default now): earlier for "missing since".
    #[arg(long)]
    effective: Option<String>,
}

fn open(args: &AdminArgs) -> Result<ChartStore, Box<dyn std::error::Error>> {
    if let Some(url) = &args.database_url {
        // A command does its own work and leaves the nodes' (the lease's) to them.
        let options = StoreOptions {
            lease: false,
            ..StoreOptions::default()
        };
        return Ok(ChartStore::open_postgres(url, options)?);
    }
    let data_dir = &args.data_dir;
    std::fs::create_dir_all(data_dir)?;
    let path = data_dir.join("charts.db");
    let key = args.store_key.resolve(data_dir, &path, false)?;
    Ok(ChartStore::open(
        path,
        StoreOptions {
            encryption_key: key.map(|(key, _)| key),
            ..StoreOptions::default()
        },
    )?)
}

fn actor(by: &str) -> Actor {
    Actor {
        user: by.to_string(),
        role: Role::Admin.token().into(),
        device: "chartsync-server".into(),
    }
}

pub fn staff(args: AdminArgs, command: StaffCommand) -> Result<(), Box<dyn std::error::Error>> {
    let store = open(&args)?;
    let by = actor(&args.by);
    match command {
        StaffCommand::Add {
            user,
            role,
            wards,
            password_stdin,
        } => {
            let phc = if password_stdin {
                let mut password = String::new();
                if std::io::stdin().is_terminal() {
                    eprint!("password for {user}: ");
                }
                std::io::stdin().lock().read_line(&mut password)?;
                Some(hash_password(password.trim_end_matches(['\r', '\n']))?)
            } else {
                None
            };
            store.put_staff(
                &by,
                &NewStaff {
                    user: &user,
                    role,
                    wards: &wards,
                    password: phc.as_deref(),
                    source: "local",
                },
            )?;
            println!("{user}: {} on {}", role.token(), wards.join(", "));
        }
        StaffCommand::Import { file } => {
            let mut text = String::new();
            std::fs::File::open(&file)
                .map_err(|e| format!("{}: {e}", file.display()))?
                .read_to_string(&mut text)?;
            let rows = read_staff_csv(text.trim_start_matches('\u{feff}'))?;
            let members: Vec<NewStaff<'_>> = rows
                .iter()
                .map(|(user, role, wards)| NewStaff {
                    user,
                    role: *role,
                    wards,
                    password: None,
                    source: "import",
                })
                .collect();
            let added = store.put_staff_all(&by, &members)?;
            println!(
                "{} people imported ({added} new, {} updated)",
                members.len(),
                members.len() - added
            );
        }
        StaffCommand::List => {
            for m in store.staff()? {
                println!(
                    "{:<24} {:<18} {:<8} {}{}",
                    m.user,
                    m.role.token(),
                    m.status.token(),
                    m.wards.join(","),
                    if m.has_password {
                        ""
                    } else {
                        "  (no password)"
                    }
                );
            }
        }
    }
    Ok(())
}

/// `user,role,wards` rows; errors name the line, never the person.
fn read_staff_csv(text: &str) -> Result<Vec<(String, Role, Vec<String>)>, String> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let headers = reader
        .headers()
        .map_err(|e| format!("the header: {e}"))?
        .clone();
    let column = |name: &str| {
        headers
            .iter()
            .position(|h| h.eq_ignore_ascii_case(name))
            .ok_or_else(|| format!("the header has no {name} column"))
    };
    let (u, r, w) = (column("user")?, column("role")?, column("wards")?);
    let mut rows = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let line = i + 2;
        let record = record.map_err(|e| format!("line {line}: {e}; nothing was imported"))?;
        let field = |n: usize| record.get(n).unwrap_or("").to_string();
        let role = Role::from_token(&field(r))
            .map_err(|e| format!("line {line}: {e}; nothing was imported"))?;
        let wards: Vec<String> = field(w)
            .split(';')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        rows.push((field(u), role, wards));
    }
    Ok(rows)
}

pub fn device(args: AdminArgs, command: DeviceCommand) -> Result<(), Box<dyn std::error::Error>> {
    let store = open(&args)?;
    match command {
        DeviceCommand::Enroll {
            label,
            wards,
            valid_hours,
        } => {
            let (code, expires) = enrolment(&store, &actor(&args.by), &label, &wards, valid_hours)?;
            println!("{code}");
            eprintln!(
                "enrolment code for {label} on {}, good until {expires}; it works once",
                wards.join(", ")
            );
        }
        DeviceCommand::List => {
            for d in store.devices()? {
                println!(
                    "{}  {:<12} {:<8} {:<24} enrolled {} by {}",
                    d.id,
                    d.label,
                    d.status.token(),
                    d.wards.join(","),
                    d.enrolled_at,
                    d.enrolled_by
                );
            }
        }
    }
    Ok(())
}

pub fn revoke(args: AdminArgs, r: RevokeArgs) -> Result<(), Box<dyn std::error::Error>> {
    let store = open(&args)?;
    let what = match r.kind.as_str() {
        "person" => Revoked::Person(r.subject),
        "certificate" => Revoked::Certificate(r.subject),
        _ => Revoked::Device(r.subject),
    };
    let severity = if r.compromised {
        Severity::Compromised
    } else {
        Severity::Administrative
    };
    let effective = match r.effective.as_deref() {
        Some(s) => Timestamp::parse(s).map_err(|e| format!("--effective: {e}"))?,
        None => Timestamp::now(),
    };
    let done = store.revoke(&actor(&args.by), &what, severity, effective, &r.reason)?;
    println!(
        "revocation {}: {} from {}",
        done.id,
        severity.token(),
        done.effective_at
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_export_reads_as_rows_or_names_its_bad_line() {
        let rows =
            read_staff_csv("user,role,wards\nrn.park,nurse,4west;5east\nmd.osei, physician ,*\n")
                .unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].2, vec!["4west".to_string(), "5east".into()]);
        assert_eq!(rows[1].1, Role::Physician);
        let err = read_staff_csv("user,role,wards\nrn.park,nurse,4west\nrn.lee,surgeon,4west\n")
            .unwrap_err();
        assert!(err.starts_with("line 3:"), "{err}");
        assert!(!err.contains("rn.lee"), "{err}");
        assert!(read_staff_csv("name,role\n").unwrap_err().contains("user"));
    }
}
