"""A shared ward tablet through the Python bindings, as an app drives it: enrolment with an
administrator's code, each nurse's first sign-in online and later ones with a PIN, charts
written as the signed-in person (each change signed), the automatic lock, too many wrong
PINs, and the sync of everything under its verified author."""

import asyncio
import datetime
import json
import time
import urllib.request

import pytest

from chartsync import chartsync_core as core
from chartsync import chartsync_ffi as ffi
from conftest import Server, heart_rate, key

PASSWORD = "night shift 4west"
SECRET = bytes(range(32))  # the app keeps its own in the Keystore / Keychain
COST = ffi.PinCost.LOW_MEMORY


def staff(server, user, role):
    server.admin("staff", "add", "--user", user, "--role", role, "--ward", "4west",
                 "--password-stdin", stdin=PASSWORD + "\n")


def enrolled(server, tmp_path, label="T-07"):
    staff(server, "him.jones", "technician")
    staff(server, "rn.park", "nurse")
    staff(server, "rn.lee", "nurse")
    code = server.admin("device", "enroll", "--label", label, "--ward", "4west")
    store = ffi.ChartStore.open(str(tmp_path / "tablet.db"), key(7))
    assert ffi.open_tablet(store, SECRET, COST) is None
    tablet = ffi.Tablet.enrol(store, SECRET, server.base, code, COST)
    return store, tablet


def patient():
    return (
        core.NewPatient(mrn="MRN-0042", family_name="Rivera", given_names="Ana",
                        birth_date="1957-03-14", sex=core.Sex.FEMALE, address=None, phone=None),
        core.NewEncounter(ward="4west", bed="12A", _class=core.EncounterClass.INPATIENT,
                          admit_source=None, attending="dr.okafor"),
    )


def admitted_on_5east(server, tmp_path):
    """A patient admitted to 5east at the records office and synced: the chart's id."""
    office = ffi.ChartStore.open(str(tmp_path / "office.db"), None)
    clerk = core.Staff(user="him.jones", role=core.Role.TECHNICIAN, device="records-pc-1")
    patient_, encounter = patient()
    encounter.ward = "5east"
    chart_id = office.create_chart(patient_, encounter, clerk).id()
    config = ffi.SyncConfig(url=server.url, device_id="records-pc-1", wards=["5east"])
    pc = ffi.SyncClient.start(office, config, server.token("him.jones", "technician", "5east"), None)
    try:
        assert asyncio.run(pc.wait_until_up_to_date(20_000))
    finally:
        asyncio.run(pc.stop())
    return chart_id


def on_server(server, chart_id):
    token = server.token("him.sup", "records_supervisor", "*")
    request = urllib.request.Request(f"{server.base}/api/charts/{chart_id}",
                                     headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request) as response:
        return json.load(response)


def test_two_nurses_on_one_tablet_sync_their_signed_work_under_their_own_names(server, tmp_path):
    store, tablet = enrolled(server, tmp_path)
    assert tablet.label() == "T-07" and tablet.wards() == ["4west"]
    assert tablet.sync_url() == server.url

    # The ward clerk admits on the tablet; two nurses sign in once, online, choosing PINs.
    clerk = tablet.sign_in_online("him.jones", PASSWORD, "111111")
    chart_id = store.create_chart_signed(*patient(), clerk).id()
    park = tablet.sign_in_online("rn.park", PASSWORD, "135790")
    assert park.staff().user == "rn.park" and park.staff().device == tablet.device_id()
    store.open_chart_signed(chart_id, park).add_entry(heart_rate(88))
    park.lock()
    with pytest.raises(ffi.ChartsyncError.Locked):
        store.open_chart_signed(chart_id, park).add_entry(heart_rate(89))
    with pytest.raises(ffi.ChartsyncError.Locked):
        store.open_chart_signed(chart_id, park).view()
    lee = tablet.sign_in_online("rn.lee", PASSWORD, "246802")
    store.open_chart_signed(chart_id, lee).add_entry(heart_rate(90))
    # On a shared tablet, nothing is written unsigned.
    with pytest.raises(ffi.ChartsyncError.NotPermitted):
        store.open_chart(chart_id, park.staff())
    # Later, rn.park again, with her PIN only.
    park = tablet.unlock("rn.park", "135790")
    store.open_chart_signed(chart_id, park).add_entry(heart_rate(91))

    # The tablet syncs under its own session; everything reaches the record.
    config = ffi.SyncConfig(url=tablet.sync_url(), device_id=tablet.device_id(), wards=["4west"])
    client = ffi.SyncClient.start(store, config, tablet.session_token(), None)
    try:
        assert asyncio.run(client.wait_until_up_to_date(20_000)), client.status()
        status = client.status()
        assert (status.unacknowledged, status.held) == (0, [])
    finally:
        asyncio.run(client.stop())
    authors = sorted(e["author"] for e in on_server(server, chart_id)["entries"])
    assert authors == ["rn.lee", "rn.park", "rn.park"]


def test_five_wrong_pins_erase_the_key_until_an_online_sign_in(server, tmp_path):
    store, tablet = enrolled(server, tmp_path)
    tablet.sign_in_online("rn.park", PASSWORD, "135790").lock()
    for left in (4, 3, 2, 1, 0):
        with pytest.raises(ffi.ChartsyncError.WrongPin):
            tablet.unlock("rn.park", "000000")
        assert tablet.people()[0].pin_attempts_left == left
    with pytest.raises(ffi.ChartsyncError.SignInRequired):
        tablet.unlock("rn.park", "135790")
    person = tablet.people()[0]
    assert (person.user, person.can_unlock, person.erased) == ("rn.park", False, "pin_attempts")
    # Online again, she chooses a new PIN.
    tablet.sign_in_online("rn.park", PASSWORD, "975310")
    assert tablet.unlock("rn.park", "975310").staff().user == "rn.park"


def test_bad_input_is_a_typed_error_and_changes_nothing(server, tmp_path):
    store = ffi.ChartStore.open(str(tmp_path / "tablet.db"), key(7))
    with pytest.raises(ffi.ChartsyncError.Refused):
        ffi.Tablet.enrol(store, SECRET, server.base, "AAAA-BBBB-CCCC", COST)
    with pytest.raises(ffi.ChartsyncError.InvalidInput):
        ffi.Tablet.enrol(store, b"short", server.base, "AAAA-BBBB-CCCC", COST)
    with pytest.raises(ffi.ChartsyncError.InvalidInput):
        ffi.Tablet.enrol(store, SECRET, "ftp://server", "AAAA-BBBB-CCCC", COST)
    assert ffi.open_tablet(store, SECRET, COST) is None
    store2 = ffi.ChartStore.open(str(tmp_path / "t2.db"), key(8))
    staff(server, "rn.park", "nurse")
    code = server.admin("device", "enroll", "--label", "T-09", "--ward", "4west")
    tablet = ffi.Tablet.enrol(store2, SECRET, server.base, code, COST)
    with pytest.raises(ffi.ChartsyncError.Refused):
        tablet.sign_in_online("rn.park", "not her password", "135790")
    with pytest.raises(ffi.ChartsyncError.InvalidInput):
        tablet.sign_in_online("rn.park", PASSWORD, "12")
    assert tablet.people() == []


def test_the_tablet_locks_after_the_idle_time_the_server_set(tmp_path):
    server = Server(tmp_path / "server", "--idle-lock", "1s")
    try:
        store, tablet = enrolled(server, tmp_path)
        clerk = tablet.sign_in_online("him.jones", PASSWORD, "111111")
        chart = store.create_chart_signed(*patient(), clerk)
        assert not clerk.is_locked()
        time.sleep(1.3)
        assert clerk.is_locked()
        with pytest.raises(ffi.ChartsyncError.Locked):
            chart.view()
        # The PIN opens it again.
        clerk = tablet.unlock("him.jones", "111111")
        assert store.open_chart_signed(chart.id(), clerk).view().patient.mrn == "MRN-0042"
    finally:
        server.stop()


def test_break_glass_opens_a_chart_on_another_ward_for_the_signed_in_nurse(server, tmp_path):
    # A patient on 5east, admitted at the records office.
    chart_id = admitted_on_5east(server, tmp_path)

    store, tablet = enrolled(server, tmp_path)
    park = tablet.sign_in_online("rn.park", PASSWORD, "135790")
    with pytest.raises(ffi.ChartsyncError.InvalidInput):
        tablet.break_glass(park, chart_id, core.BreakGlassReason.EMERGENCY_TREATMENT, " ")
    ends = tablet.break_glass(park, chart_id, core.BreakGlassReason.EMERGENCY_TREATMENT,
                              "code blue, no 5east nurse at hand")
    assert ends > datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=3)

    config = ffi.SyncConfig(url=tablet.sync_url(), device_id=tablet.device_id(), wards=["4west"])
    client = ffi.SyncClient.start(store, config, tablet.session_token(), None)
    try:
        client.fetch(chart_id)
        deadline = time.monotonic() + 20
        while store.summary(chart_id) is None:
            assert time.monotonic() < deadline, "the chart never arrived"
            time.sleep(0.05)
        store.open_chart_signed(chart_id, park).add_entry(heart_rate(130))
        assert asyncio.run(client.wait_until_up_to_date(20_000)), client.status()
        assert client.status().unacknowledged == 0
    finally:
        asyncio.run(client.stop())
    assert [e["author"] for e in on_server(server, chart_id)["entries"]] == ["rn.park"]


def test_break_glass_offline_on_a_chart_the_tablet_carries_is_filed_when_it_syncs(server, tmp_path):
    chart_id = admitted_on_5east(server, tmp_path)

    # A tablet serving 4west and 5east; rn.park's own access is 4west.
    staff(server, "rn.park", "nurse")
    code = server.admin("device", "enroll", "--label", "T-12", "--ward", "4west", "--ward", "5east")
    store = ffi.ChartStore.open(str(tmp_path / "tablet.db"), key(7))
    tablet = ffi.Tablet.enrol(store, SECRET, server.base, code, COST)
    park = tablet.sign_in_online("rn.park", PASSWORD, "135790")
    config = ffi.SyncConfig(url=tablet.sync_url(), device_id=tablet.device_id(), wards=tablet.wards())

    def sync():
        client = ffi.SyncClient.start(store, config, tablet.session_token(), None)
        try:
            assert asyncio.run(client.wait_until_up_to_date(20_000)), client.status()
            return client.status()
        finally:
            asyncio.run(client.stop())

    sync()
    assert store.summary(chart_id) is not None

    # Offline: she opens the 5east chart with break-glass and charts on it.
    other = "4CYcjxewE5eZWTh9JMJRHCsqcw5e"
    with pytest.raises((ffi.ChartsyncError.NotFound, ffi.ChartsyncError.InvalidInput)):
        tablet.break_glass_offline(park, other, core.BreakGlassReason.EMERGENCY_TREATMENT, "x")
    tablet.break_glass_offline(park, chart_id, core.BreakGlassReason.EMERGENCY_TREATMENT,
                               "collapsed in the corridor")
    store.open_chart_signed(chart_id, park).add_entry(heart_rate(44))

    status = sync()
    assert (status.unacknowledged, status.held) == (0, [])
    assert [e["author"] for e in on_server(server, chart_id)["entries"]] == ["rn.park"]
