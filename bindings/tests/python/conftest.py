"""Fixtures for the Python binding tests: a real chartsync-server on an ephemeral port,
tokens from its own command line, and the patients and staff of the scenarios.

bindings/tests/run.sh generates the bindings (package `chartsync`) and sets
CHARTSYNC_SERVER to the server binary."""

import os
import re
import subprocess
import threading

import pytest

from chartsync import chartsync_core as core
from chartsync import chartsync_ffi as ffi


def pytest_configure(config):
    # Stale bindings against a new library would run silently wrong: check before any test.
    for module in (core, ffi):
        module._uniffi_check_contract_api_version(module._UniffiLib)
        module._uniffi_check_api_checksums(module._UniffiLib)


# The test servers' stores are encrypted with this key, as a hospital's are with its own.
STORE_ENV = {**os.environ, "CHARTSYNC_STORE_KEY": "ab5e11ed" * 8}


class Server:
    def __init__(self, data_dir, *options):
        self.binary = os.environ.get("CHARTSYNC_SERVER", "target/debug/chartsync-server")
        self.data_dir = str(data_dir)
        self.process = subprocess.Popen(
            [self.binary, "serve", "--listen", "127.0.0.1:0", "--data-dir", self.data_dir,
             *options],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env={**STORE_ENV, "NO_COLOR": "1", "RUST_LOG": "info"},
            text=True,
        )
        for line in self.process.stdout:
            found = re.search(r"listening.*?(127\.0\.0\.1:\d+)", line)
            if found:
                self.addr = found.group(1)
                break
        else:
            raise RuntimeError("the server exited before listening")
        # Keep reading its log so it never blocks on a full pipe.
        threading.Thread(target=self.process.stdout.read, daemon=True).start()

    @property
    def url(self):
        return f"ws://{self.addr}/sync"

    @property
    def base(self):
        return f"http://{self.addr}"

    def admin(self, *args, stdin=""):
        """One of the server's administration commands (staff, device, revoke)."""
        return subprocess.run(
            [self.binary, *args, "--data-dir", self.data_dir, "--by", "admin.kim"],
            input=stdin, check=True, capture_output=True, text=True, env=STORE_ENV,
        ).stdout.strip()

    def token(self, user, role, *wards, ttl="12h"):
        args = [self.binary, "token", "--data-dir", self.data_dir, "--user", user, "--role", role,
                "--ttl", ttl]
        for ward in wards:
            args += ["--ward", ward]
        return subprocess.run(args, check=True, capture_output=True, text=True).stdout.strip()

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=15)


@pytest.fixture
def server(tmp_path):
    s = Server(tmp_path / "server")
    yield s
    s.stop()


def key(byte):
    """A 256-bit store key; the apps keep theirs in the Keystore or Keychain."""
    return bytes([byte]) * 32


NIGHT_NURSE = core.Staff(user="rn.park", role=core.Role.NURSE, device="tablet-4west-02")
CLERK = core.Staff(user="him.jones", role=core.Role.TECHNICIAN, device="records-pc-1")


def admit(store):
    """Ana Rivera, admitted to 4west bed 12A by the registration clerk."""
    return store.create_chart(
        core.NewPatient(
            mrn="MRN-0042",
            family_name="Rivera",
            given_names="Ana",
            birth_date="1957-03-14",
            sex=core.Sex.FEMALE,
            address=None,
            phone=None,
        ),
        core.NewEncounter(
            ward="4west",
            bed="12A",
            _class=core.EncounterClass.INPATIENT,
            admit_source=None,
            attending="dr.okafor",
        ),
        CLERK,
    )


def heart_rate(bpm):
    return core.NewEntry(
        kind=core.EntryKind.OBSERVATION,
        shift=core.Shift.NIGHT,
        effective_at=None,
        codes=[core.CodeInput(system=core.CodeSystem.LOINC, code="8867-4")],
        value=str(bpm),
        unit="/min",
        body="Heart rate",
    )


def nursing_note(text):
    return core.NewEntry(
        kind=core.EntryKind.NURSING_NOTE,
        shift=core.Shift.NIGHT,
        effective_at=None,
        codes=[],
        value=None,
        unit=None,
        body=text,
    )
