"""A tablet app's flows through the Python bindings: the same library the Kotlin and Swift
apps load, against a real chartsync-server."""

import asyncio
import datetime
import os
import sqlite3
import threading
import time

import pytest

from chartsync import chartsync_core as core
from chartsync import chartsync_ffi as ffi
from conftest import CLERK, NIGHT_NURSE, Server, admit, heart_rate, key, nursing_note


class Listener(ffi.ChartsyncListener):
    """What an app's listener sees, kept for the test to look at."""

    def __init__(self):
        self.changed = []
        self.states = []
        self.left = []
        self.set_aside = []
        self.removed = []
        self.signed_out_users = []
        self.lock = threading.Lock()

    def chart_changed(self, id, sections):
        with self.lock:
            self.changed.append((id, sorted(sections)))

    def sync_status_changed(self, status):
        with self.lock:
            self.states.append(status.state)

    def chart_left(self, id, reason):
        with self.lock:
            self.left.append((id, reason))

    def chart_set_aside(self, id, reason):
        with self.lock:
            self.set_aside.append((id, reason))

    def chart_removed(self, id, reason):
        with self.lock:
            self.removed.append((id, reason))

    def signed_out(self, user):
        with self.lock:
            self.signed_out_users.append(user)

    def attachment_ready(self, id, hash):
        pass

    def attachment_failed(self, id, hash, reason):
        pass


@pytest.fixture
def clients():
    """Starts sync clients, and stops every one at the end of the test, passed or failed: a
    client left running calls its listener from its own threads while Python exits."""
    started = []

    def start(store, server, staff_user, role, listener=None, device="tablet"):
        config = ffi.SyncConfig(url=server.url, device_id=device, wards=["4west"])
        token = server.token(staff_user, role, "4west")
        client = ffi.SyncClient.start(store, config, token, listener)
        started.append(client)
        return client

    yield start
    for client in started:
        asyncio.run(client.stop())


def eventually(what, probe, seconds=20):
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        if probe():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def settle(client, seconds=20):
    assert asyncio.run(client.wait_until_up_to_date(seconds * 1000)), client.status()


def test_a_night_shift_observation_made_offline_reaches_the_day_tablet(server, clients, tmp_path):
    # Admitted at the records office, synced to the server.
    office = ffi.ChartStore.open(str(tmp_path / "office.db"), None)
    chart_id = admit(office).id()
    pc = clients(office, server, "him.jones", "technician", device="records-pc-1")
    settle(pc)
    asyncio.run(pc.stop())

    # The night tablet (encrypted store) finds the chart through its ward's census.
    night = ffi.ChartStore.open(str(tmp_path / "night.db"), key(1))
    listener = Listener()
    client = clients(night, server, "rn.park", "nurse", listener, device="tablet-4west-02")
    settle(client)
    assert [s.id for s in night.census("4west")] == [chart_id]
    eventually("the listener to hear of the chart", lambda: any(i == chart_id for i, _ in listener.changed))

    # Offline: the observation is committed on the tablet and waits there.
    asyncio.run(client.stop())
    assert client.status().state.is_STOPPED()
    chart = night.open_chart(chart_id, NIGHT_NURSE)
    entry_id = chart.add_entry(heart_rate(72))
    assert chart.view().entries[-1].content.value == "72"

    # An invalid code is refused with the typed error, and nothing is written.
    bad = heart_rate(80)
    bad.codes = [core.CodeInput(system=core.CodeSystem.ICD10_CM, code="ZZZ.999")]
    with pytest.raises(ffi.ChartsyncError.InvalidCode) as refused:
        chart.add_entry(bad)
    assert "ZZZ" not in str(refused.value), "no chart data in error messages"
    assert len(chart.view().entries) == 1

    # Back online: the listener hears the status go up to date.
    listener = Listener()
    client = clients(night, server, "rn.park", "nurse", listener, device="tablet-4west-02")
    settle(client)
    assert client.status().unacknowledged == 0
    eventually("the listener to hear up to date", lambda: any(s.is_UP_TO_DATE() for s in listener.states))
    asyncio.run(client.stop())

    # The day tablet, another store, receives it.
    day = ffi.ChartStore.open(str(tmp_path / "day.db"), key(2))
    day_client = clients(day, server, "rn.lee", "nurse", device="tablet-4west-05")
    settle(day_client)
    entries = day.open_chart(chart_id, CLERK).view().entries
    assert [(e.id, e.content.value, e.content.author) for e in entries] == [
        (entry_id, "72", "rn.park")
    ]
    asyncio.run(day_client.stop())


def test_two_tablets_change_the_same_phone_offline_and_one_settles_it(server, clients, tmp_path):
    office = ffi.ChartStore.open(str(tmp_path / "office.db"), None)
    chart_id = admit(office).id()
    settle(clients(office, server, "him.jones", "technician", device="records-pc-1"))
    tablets = {}
    for user in ("rn.park", "rn.lee"):
        store = ffi.ChartStore.open(str(tmp_path / f"{user}.db"), key(10))
        client = clients(store, server, user, "nurse", device=f"tablet-{user}")
        settle(client)
        asyncio.run(client.stop())
        staff = core.Staff(user=user, role=core.Role.NURSE, device=f"tablet-{user}")
        tablets[user] = (store, store.open_chart(chart_id, staff))

    # Both offline, both take a change-of-information form with a new phone number.
    for user, phone in (("rn.park", "555-0101"), ("rn.lee", "555-0199")):
        update = core.PatientUpdate(
            family_name=None, given_names=None, birth_date=None, sex=None, address=None, phone=phone
        )
        tablets[user][1].change_information(update)
    # Back online (each client stays connected, so each hears the other's change).
    for user, (store, _) in tablets.items():
        settle(clients(store, server, user, "nurse", device=f"tablet-{user}"))
    store, chart = tablets["rn.park"]

    def phone_conflicts():
        return [c for c in chart.conflicts() if c.path == ["patient", "phone"]]

    eventually("rn.lee's phone number to reach rn.park's tablet", phone_conflicts)
    conflicts = phone_conflicts()
    assert len(conflicts) == 1, chart.conflicts()
    written = {(v.user, v.value) for v in conflicts[0].values}
    assert written == {("rn.park", '"555-0101"'), ("rn.lee", '"555-0199"')}
    assert store.summary(chart_id).open_deficiencies >= 1

    keep = next(i for i, v in enumerate(conflicts[0].values) if v.user == "rn.lee")
    chart.resolve_conflict(["patient", "phone"], ffi.ConflictChoice.KEEP(index=keep))
    assert chart.view().patient.phone == "555-0199"
    assert not phone_conflicts()


def test_a_note_is_signed_then_corrected_by_amendment(tmp_path):
    store = ffi.ChartStore.open(str(tmp_path / "tablet.db"), key(3))
    chart_id = admit(store).id()
    chart = store.open_chart(chart_id, NIGHT_NURSE)
    note = chart.add_entry(nursing_note("Settled overnight; no complaints of pain."))
    before = store.summary(chart_id).open_deficiencies
    assert any(d.record_id == note for d in chart.deficiencies()), "an unsigned note is missing its signature"
    # The nurse's own worklist: the note, not yet due (due 30 days after discharge).
    mine = store.worklist(None, NIGHT_NURSE.user, False)
    assert [(w.chart, w.deficiency.record_id, w.overdue) for w in mine] == [(chart_id, note, False)]
    assert mine[0].deficiency.due_at is None
    # The ward's: the history and physical is due within a day of admission.
    ward = store.worklist("4west", None, False)
    hp = [w for w in ward if w.deficiency.kind == core.DeficiencyKind.HISTORY_PHYSICAL_MISSING]
    assert len(hp) == 1
    due, now = hp[0].deficiency.due_at, datetime.datetime.now(datetime.timezone.utc)
    if due.tzinfo is None:  # uniffi hands out UTC
        now = now.replace(tzinfo=None)
    assert now < due <= now + datetime.timedelta(hours=24)

    chart.sign_entry(note, core.SignatureMeaning.AUTHOR)
    assert store.summary(chart_id).open_deficiencies == before - 1
    assert chart.view().entries[0].signed

    # Coding is for coders and technicians, not the nurse signed in on this handle.
    with pytest.raises(ffi.ChartsyncError.NotPermitted):
        chart.assign_code(
            core.NewCoding(
                code=core.CodeInput(system=core.CodeSystem.ICD10_CM, code="J18.9"),
                sequence=core.CodingSequence.PRINCIPAL,
                poa=core.PresentOnAdmission.YES,
                supporting_entries=[],
            )
        )
    assert chart.view().coding == []

    # Signed means frozen: a correction is an amendment.
    with pytest.raises(ffi.ChartsyncError.Signed):
        chart.edit_entry_body(note, "Settled overnight.")
    amendment = chart.amend(
        core.NewAmendment(
            target_entry_id=note,
            kind=core.AmendmentKind.CORRECTION,
            reason="wrong patient's pain score quoted",
            body="Settled overnight; pain 2/10 at 03:00.",
        )
    )
    view = chart.view()
    assert [a.id for a in view.amendments] == [amendment]
    assert view.amendments[0].target_entry_id == note
    assert view.entries[0].content.body == "Settled overnight; no complaints of pain."


def test_an_encrypted_store_opens_only_with_its_key(tmp_path):
    path = str(tmp_path / "tablet.db")
    store = ffi.ChartStore.open(path, key(4))
    admit(store)
    del store
    with pytest.raises(ffi.ChartsyncError.WrongKey):
        ffi.ChartStore.open(path, key(5))
    with pytest.raises(ffi.ChartsyncError.WrongKey):
        ffi.ChartStore.open(path, None)
    with pytest.raises(ffi.ChartsyncError.InvalidInput):
        ffi.ChartStore.open(path, b"short")

    # Another application's SQLite file is refused and left as it was.
    foreign = tmp_path / "other-app.db"
    with sqlite3.connect(foreign) as db:
        db.execute("CREATE TABLE notes (body TEXT)")
    before = foreign.read_bytes()
    with pytest.raises(ffi.ChartsyncError.StoreFile):
        ffi.ChartStore.open(str(foreign), None)
    assert foreign.read_bytes() == before
    assert [s.bed for s in ffi.ChartStore.open(path, key(4)).census("4west")] == ["12A"]


def test_charts_move_between_stores_by_bulk_import_all_or_nothing(tmp_path):
    source = ffi.ChartStore.open(str(tmp_path / "source.db"), None)
    documents = [source.export_chart(admit(source).id()) for _ in range(3)]

    class Progress(ffi.ImportListener):
        def __init__(self):
            self.seen = []

        def progress(self, status):
            self.seen.append((status.done, status.total))

    target = ffi.ChartStore.open(str(tmp_path / "target.db"), key(6))
    with pytest.raises(ffi.ChartsyncError.InvalidInput):
        target.import_charts(documents + [ffi.ChartDocument(id=documents[0].id, bytes=b"junk")], None)
    # The third chart is written inside the transaction before the repeated id is refused:
    # nothing of it stays.
    repeated = documents + [documents[0]]
    seen = Progress()
    with pytest.raises(ffi.ChartsyncError.InvalidInput) as refused:
        target.import_charts(repeated, seen)
    assert "item 3" in str(refused.value)
    assert seen.seen == [(1, 4), (2, 4), (3, 4)]
    assert target.charts_of_patient("MRN-0042") == []

    progress = Progress()
    imported = target.import_charts(documents, progress)
    assert imported == [d.id for d in documents]
    assert progress.seen == [(1, 3), (2, 3), (3, 3)]
    assert len(target.charts_of_patient("MRN-0042")) == 3


def test_a_second_store_receives_what_the_kotlin_tablet_recorded(tmp_path, clients):
    handoff = os.environ.get("CHARTSYNC_HANDOFF")
    if not handoff:
        pytest.skip("bindings/tests/run.sh runs this after the Kotlin tests")
    with open(handoff) as f:
        chart_id, first, second = f.read().split()
    store = ffi.ChartStore.open(str(tmp_path / "day.db"), key(9))
    config = ffi.SyncConfig(url=os.environ["CHARTSYNC_URL"], device_id="tablet-4west-05", wards=["4west"])
    client = ffi.SyncClient.start(store, config, os.environ["CHARTSYNC_TOKEN_DAY"], None)
    try:
        settle(client)
    finally:
        asyncio.run(client.stop())
    view = store.open_chart(chart_id, CLERK).view()
    assert view.patient.mrn == "MRN-0077"
    assert [(e.id, e.content.value, e.content.author) for e in view.entries] == [
        (first, "72", "rn.park"),
        (second, "76", "rn.park"),
    ]


class Thrower(ffi.ChartsyncListener):
    """An app listener with a bug: it throws every time."""

    def __init__(self):
        self.calls = 0

    def chart_changed(self, id, sections):
        self.calls += 1
        raise RuntimeError("app bug")

    def sync_status_changed(self, status):
        self.calls += 1
        raise RuntimeError("app bug")

    def chart_left(self, id, reason):
        self.calls += 1
        raise RuntimeError("app bug")

    def chart_set_aside(self, id, reason):
        self.calls += 1
        raise RuntimeError("app bug")

    def chart_removed(self, id, reason):
        self.calls += 1
        raise RuntimeError("app bug")

    def signed_out(self, user):
        self.calls += 1
        raise RuntimeError("app bug")

    def attachment_ready(self, id, hash):
        self.calls += 1
        raise RuntimeError("app bug")

    def attachment_failed(self, id, hash, reason):
        self.calls += 1
        raise RuntimeError("app bug")


def test_a_shared_tablet_shows_the_held_chart_and_a_throwing_listener_keeps_hearing(
    server, clients, tmp_path
):
    # rn.silva charted on the tablet earlier; the registration clerk is signed in now.
    store = ffi.ChartStore.open(str(tmp_path / "shared.db"), key(5))
    chart_id = admit(store).id()
    silva = core.Staff(user="rn.silva", role=core.Role.NURSE, device="tablet-4west-03")
    store.open_chart(chart_id, silva).add_entry(heart_rate(101))

    thrower, listener = Thrower(), Listener()
    client = clients(store, server, "him.jones", "technician", thrower, device="tablet-4west-03")
    handle = client.add_listener(listener)
    eventually("the chart held for review", lambda: client.status().state.is_WAITING_FOR_REVIEW())
    status = client.status()
    assert [(h.chart, h.reason) for h in status.held] == [(chart_id, core.HoldReason.ANOTHER_AUTHOR)]
    assert status.held[0].rejected is None
    # The chart is new to the server, so it is held whole: the admission and the observation.
    assert (status.unacknowledged, status.unacknowledged_commits) == (1, 2)
    eventually("the second listener to hear it", lambda: any(s.is_WAITING_FOR_REVIEW() for s in listener.states))
    assert thrower.calls > 1, "the throwing listener was told once and never again"
    assert client.remove_listener(handle) and not client.remove_listener(handle)


def test_an_expired_sign_in_waits_for_a_new_token(server, tmp_path):
    store = ffi.ChartStore.open(str(tmp_path / "tablet.db"), key(4))
    admit(store)
    config = ffi.SyncConfig(url=server.url, device_id="tablet-4west-04", wards=["4west"])
    short = server.token("him.jones", "technician", "4west", ttl="3s")
    assert short not in repr(config), "the config prints no token"
    client = ffi.SyncClient.start(store, config, short, None)
    try:
        settle(client)
        eventually("sign-in required", lambda: client.status().state.is_SIGN_IN_REQUIRED())
        client.set_token(server.token("him.jones", "technician", "4west"))
        settle(client)
        with pytest.raises(ffi.ChartsyncError.InvalidInput):
            client.set_token("  ")
    finally:
        asyncio.run(client.stop())


def test_a_malformed_chart_id_is_a_typed_error(tmp_path):
    store = ffi.ChartStore.open(str(tmp_path / "tablet.db"), None)
    for call in (
        lambda: store.open_chart("not-a-chart-id", CLERK),
        lambda: store.summary("automerge:xyz"),
        lambda: store.export_chart(""),
        lambda: store.import_charts([ffi.ChartDocument(id="nope", bytes=b"")], None),
    ):
        with pytest.raises(ffi.ChartsyncError.InvalidInput) as e:
            call()
        assert "nope" not in str(e.value) and "xyz" not in str(e.value)


def test_a_chart_transferred_while_the_tablet_was_offline_leaves_it_after_its_vitals_land(
    server, clients, tmp_path
):
    office = ffi.ChartStore.open(str(tmp_path / "office.db"), None)
    chart_id = admit(office).id()
    pc = clients(office, server, "him.jones", "technician", device="records-pc-1")
    settle(pc)

    night = ffi.ChartStore.open(str(tmp_path / "night.db"), key(3))
    client = clients(night, server, "rn.park", "nurse", device="tablet-4west-06")
    settle(client)
    asyncio.run(client.stop())

    # Offline, a heart rate; meanwhile the patient moves to 5east.
    chart = night.open_chart(chart_id, NIGHT_NURSE)
    chart.add_entry(heart_rate(77))
    office.open_chart(chart_id, CLERK).transfer("5east", "2")
    settle(pc)

    listener = Listener()
    client = clients(night, server, "rn.park", "nurse", listener, device="tablet-4west-06")
    eventually("the app to hear the chart left", lambda: listener.left)
    assert listener.left == [(chart_id, core.LeftReason.TRANSFERRED)]
    settle(client)
    assert client.status().unacknowledged == 0, "the heart rate reached the record first"
    assert night.census("4west") == []
    with pytest.raises(ffi.ChartsyncError.NotPermitted):
        chart.add_entry(heart_rate(78))
    assert len(chart.view().entries) == 1, "still there to read"


def test_a_chart_that_left_is_removed_from_the_tablet_and_the_app_hears_it(tmp_path, clients):
    # A server that removes charts from tablets as soon as it has everything written there
    # (backed up by other means than chartsync-records).
    server = Server(tmp_path / "server", "--purge-after", "0s", "--purge-without-backup")
    try:
        office = ffi.ChartStore.open(str(tmp_path / "office.db"), None)
        chart_id = admit(office).id()
        pc = clients(office, server, "him.jones", "technician", device="records-pc-1")
        settle(pc)

        night = ffi.ChartStore.open(str(tmp_path / "night.db"), key(4))
        listener = Listener()
        client = clients(night, server, "rn.park", "nurse", listener, device="tablet-4west-07")
        settle(client)
        chart = night.open_chart(chart_id, NIGHT_NURSE)
        chart.add_entry(heart_rate(81))
        settle(client)

        office.open_chart(chart_id, CLERK).transfer("5east", "2")
        settle(pc)
        eventually("the app to hear the chart was removed", lambda: listener.removed)
        assert listener.left == [(chart_id, core.LeftReason.TRANSFERRED)]
        assert listener.removed == [(chart_id, core.LeftReason.TRANSFERRED)]
        assert night.summary(chart_id) is None
        with pytest.raises(ffi.ChartsyncError.NotFound):
            chart.view()
        eventually("the server to record the removal",
                   lambda: [p.reported for p in night.purged_charts()] == [True])
        removed = night.purged_charts()[0]
        assert (removed.chart, removed.reason) == (chart_id, core.LeftReason.TRANSFERRED)
    finally:
        server.stop()
