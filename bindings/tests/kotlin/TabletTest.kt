// A tablet app's flows through the Kotlin bindings on the JVM: the same generated code and
// library an Android app uses (there through an .aar), against a real chartsync-server that
// bindings/tests/run.sh starts. It leaves what it recorded in a hand-off file, and the Python
// tests check that a second store receives it.

import java.io.File
import java.util.concurrent.CopyOnWriteArrayList
import kotlinx.coroutines.runBlocking
import uniffi.chartsync_core.*
import uniffi.chartsync_ffi.*

fun env(name: String): String = System.getenv(name) ?: error("$name is not set: run bindings/tests/run.sh")

val nightNurse = Staff(user = "rn.park", role = Role.NURSE, device = "tablet-4west-02")

fun key(byte: Int) = ByteArray(32) { byte.toByte() }

fun heartRate(bpm: Int) = NewEntry(
    kind = EntryKind.OBSERVATION,
    shift = Shift.NIGHT,
    effectiveAt = null,
    codes = listOf(CodeInput(system = CodeSystem.LOINC, code = "8867-4")),
    value = bpm.toString(),
    unit = "/min",
    body = "Heart rate",
)

fun admit(store: ChartStore, by: Staff): Chart = store.createChart(
    NewPatient(
        mrn = "MRN-0077",
        familyName = "Okoye",
        givenNames = "Chidi",
        birthDate = "1949-08-02",
        sex = Sex.MALE,
        address = null,
        phone = null,
    ),
    NewEncounter(ward = "4west", bed = "7B", `class` = EncounterClass.INPATIENT, admitSource = "emergency", attending = null),
    by,
)

class Listener : ChartsyncListener {
    val changed = CopyOnWriteArrayList<String>()
    val states = CopyOnWriteArrayList<SyncState>()
    val left = CopyOnWriteArrayList<String>()
    val setAside = CopyOnWriteArrayList<String>()
    val removed = CopyOnWriteArrayList<String>()
    override fun chartChanged(id: String, sections: List<String>) { changed.add(id) }
    override fun syncStatusChanged(status: SyncStatus) { states.add(status.state) }
    override fun chartLeft(id: String, reason: LeftReason) { left.add(id) }
    override fun chartSetAside(id: String, reason: String) { setAside.add(id) }
    override fun chartRemoved(id: String, reason: LeftReason) { removed.add(id) }
    override fun signedOut(user: String) {}
    override fun attachmentReady(id: String, hash: String) {}
    override fun attachmentFailed(id: String, hash: String, reason: String) {}
}

fun check(condition: Boolean, what: () -> String) {
    if (!condition) throw AssertionError(what())
}

fun <T> eventually(what: String, probe: () -> T?): T {
    val until = System.nanoTime() + 20_000_000_000L
    while (System.nanoTime() < until) {
        probe()?.let { return it }
        Thread.sleep(50)
    }
    throw AssertionError("timed out waiting for $what")
}

fun bindingsMatchTheLibrary() {
    // Generated code from another build of the library must fail here, not run wrong.
    uniffi.chartsync_core.uniffiEnsureInitialized()
    uniffi.chartsync_ffi.uniffiEnsureInitialized()
    check(chartsyncVersion().isNotEmpty()) { "no version" }
}

fun aTabletAdmitsAndRecordsOfflineThenSyncs() {
    val work = File(env("CHARTSYNC_WORK")).apply { mkdirs() }
    val store = ChartStore.open(File(work, "kotlin-tablet.db").path, key(7))

    // No network yet: the admission and the observation are committed on the tablet.
    val chart = admit(store, nightNurse)
    val first = chart.addEntry(heartRate(72))
    check(store.census("4west").map { it.id } == listOf(chart.id())) { "the census lists the new chart" }

    // An invalid code: the typed exception, and nothing written.
    val bad = heartRate(90).copy(codes = listOf(CodeInput(system = CodeSystem.ICD10_CM, code = "ZZZ.999")))
    val refused = runCatching { chart.addEntry(bad) }.exceptionOrNull()
    check(refused is ChartsyncException.InvalidCode) { "expected InvalidCode, got $refused" }
    check(refused!!.message?.contains("ZZZ") == false) { "no chart data in error messages: ${refused.message}" }
    check(chart.view().entries.size == 1) { "the refused entry was not written" }

    // The network returns: the client syncs, and the listener hears about it.
    val listener = Listener()
    val config = SyncConfig(url = env("CHARTSYNC_URL"), deviceId = "tablet-4west-02", wards = listOf("4west"))
    // Counted before the first connection, from the store alone.
    val client = SyncClient.start(store, config, env("CHARTSYNC_TOKEN_NIGHT"), listener)
    check(!config.toString().contains(env("CHARTSYNC_TOKEN_NIGHT"))) { "the config prints no token" }
    check(runBlocking { client.waitUntilUpToDate(20_000uL) }) { "not up to date: ${client.status()}" }
    eventually("the listener to hear the status go up to date") { listener.states.firstOrNull { it is SyncState.UpToDate } }

    // Written while online: the listener hears of the chart, and it goes to the server.
    val second = chart.addEntry(heartRate(76))
    eventually("the listener to hear the chart change") { listener.changed.firstOrNull { it == chart.id() } }
    check(runBlocking { client.waitUntilUpToDate(20_000uL) }) { "not up to date: ${client.status()}" }
    check(client.status().unacknowledged == 0uL) { "unacknowledged: ${client.status()}" }
    runBlocking { client.stop() }
    check(client.status().state is SyncState.Stopped) { "stopped: ${client.status()}" }

    File(env("CHARTSYNC_HANDOFF")).writeText("${chart.id()}\n$first\n$second\n")
}

fun aSignedNoteIsCorrectedByAmendment() {
    val work = File(env("CHARTSYNC_WORK"))
    val store = ChartStore.open(File(work, "kotlin-notes.db").path, key(8))
    val chart = admit(store, nightNurse)
    val note = chart.addEntry(heartRate(0).copy(kind = EntryKind.NURSING_NOTE, codes = listOf(), value = null, unit = null, body = "Restless until 02:00."))
    check(chart.deficiencies().any { it.recordId == note }) { "an unsigned note is a deficiency" }
    val mine = store.worklist(null, nightNurse.user, false)
    check(mine.map { it.deficiency.recordId } == listOf(note) && !mine.single().overdue) { "the nurse's worklist: $mine" }
    val hp = store.worklist("4west", null, false).filter { it.deficiency.kind == DeficiencyKind.HISTORY_PHYSICAL_MISSING }
    check(hp.single().deficiency.dueAt!!.isAfter(java.time.Instant.now())) { "the H&P is due within a day: $hp" }
    chart.signEntry(note, SignatureMeaning.AUTHOR)
    check(chart.deficiencies().none { it.recordId == note }) { "signed: no longer a deficiency" }
    val edit = runCatching { chart.editEntryBody(note, "Restless.") }.exceptionOrNull()
    check(edit is ChartsyncException.Signed) { "a signed note cannot be edited: $edit" }
    chart.amend(NewAmendment(targetEntryId = note, kind = AmendmentKind.ADDENDUM, reason = "late observation", body = "Settled after analgesia."))
    check(chart.view().amendments.single().targetEntryId == note) { "the amendment names the note" }
}

// A shared tablet: rn.park is signed in, and rn.silva's observation from earlier in the shift
// waits for a records supervisor. The app sees the held chart and why; a listener that throws
// keeps being told, and a second listener hears too.
fun aHeldChartIsShownAndAThrowingListenerKeepsHearing() {
    val work = File(env("CHARTSYNC_WORK"))
    val store = ChartStore.open(File(work, "kotlin-shared.db").path, key(6))
    val chart = admit(store, nightNurse)
    val silva = Staff(user = "rn.silva", role = Role.NURSE, device = "tablet-4west-02")
    store.openChart(chart.id(), silva).addEntry(heartRate(101))
    val thrower = object : ChartsyncListener {
        val calls = java.util.concurrent.atomic.AtomicInteger()
        override fun chartChanged(id: String, sections: List<String>) { calls.incrementAndGet(); throw IllegalStateException("app bug") }
        override fun syncStatusChanged(status: SyncStatus) { calls.incrementAndGet(); throw IllegalStateException("app bug") }
        override fun chartLeft(id: String, reason: LeftReason) { calls.incrementAndGet(); throw IllegalStateException("app bug") }
        override fun chartSetAside(id: String, reason: String) { calls.incrementAndGet(); throw IllegalStateException("app bug") }
        override fun chartRemoved(id: String, reason: LeftReason) { calls.incrementAndGet(); throw IllegalStateException("app bug") }
        override fun signedOut(user: String) { calls.incrementAndGet(); throw IllegalStateException("app bug") }
        override fun attachmentReady(id: String, hash: String) { calls.incrementAndGet(); throw IllegalStateException("app bug") }
        override fun attachmentFailed(id: String, hash: String, reason: String) { calls.incrementAndGet(); throw IllegalStateException("app bug") }
    }
    val config = SyncConfig(url = env("CHARTSYNC_URL"), deviceId = "tablet-4west-02", wards = listOf("4west"))
    val client = SyncClient.start(store, config, env("CHARTSYNC_TOKEN_NIGHT"), thrower)
    val listener = Listener()
    val handle = client.addListener(listener)
    val held = eventually("the chart held for review") {
        client.status().takeIf { it.state is SyncState.WaitingForReview }
    }
    check(held.held.single().chart == chart.id() && held.held.single().reason == HoldReason.ANOTHER_AUTHOR) { "held: $held" }
    // The chart is new to the server, so it is held whole: the admission and the observation.
    check(held.unacknowledged == 1uL && held.unacknowledgedCommits == 2uL) { "counts: $held" }
    eventually("the second listener to hear it") { listener.states.firstOrNull { it is SyncState.WaitingForReview } }
    check(thrower.calls.get() > 1) { "the throwing listener was told once and never again" }
    check(client.removeListener(handle) && !client.removeListener(handle)) { "a listener is removed once" }
    val bad = runCatching { store.openChart("not-a-chart-id", nightNurse) }.exceptionOrNull()
    check(bad is ChartsyncException.InvalidInput) { "a malformed chart id is InvalidInput, got $bad" }
    runBlocking { client.stop() }
}

// The night nurse's sign-in has expired: the tablet says so and waits, and with a new token
// it carries on.
fun anExpiredSignInWaitsForANewToken() {
    val work = File(env("CHARTSYNC_WORK"))
    val store = ChartStore.open(File(work, "kotlin-expired.db").path, key(5))
    admit(store, nightNurse)
    Thread.sleep(2_000) // the token lasted one second from just before the tests started
    val config = SyncConfig(url = env("CHARTSYNC_URL"), deviceId = "tablet-4west-07", wards = listOf("4west"))
    val client = SyncClient.start(store, config, env("CHARTSYNC_TOKEN_EXPIRING"), null)
    val state = eventually("sign-in required") { client.status().state.takeIf { it is SyncState.SignInRequired } }
    check(client.status().unacknowledged == 1uL) { "the admission waits: ${client.status()}" }
    val blank = runCatching { client.setToken(" ") }.exceptionOrNull()
    check(blank is ChartsyncException.InvalidInput) { "a blank token is InvalidInput, got $blank" }
    client.setToken(env("CHARTSYNC_TOKEN_NIGHT"))
    check(runBlocking { client.waitUntilUpToDate(20_000uL) }) { "not up to date after signing in again ($state): ${client.status()}" }
    runBlocking { client.stop() }
}

// A shared ward tablet, as an app signs people in: enrolment with the administrator's code,
// each person's first sign-in online with a PIN chosen then, later ones offline with the PIN,
// the lock, and the sync of everyone's signed work under the tablet's own session.
fun aSharedTabletSignsPeopleInAndSyncsTheirSignedWork() {
    val work = File(env("CHARTSYNC_WORK"))
    val store = ChartStore.open(File(work, "kotlin-enrolled.db").path, key(9))
    val secret = ByteArray(32) { (it * 7).toByte() } // an app keeps its own in the Android Keystore
    val tablet = openTablet(store, secret, PinCost.LOW_MEMORY)
        ?: Tablet.enrol(store, secret, env("CHARTSYNC_BASE"), env("CHARTSYNC_ENROL_CODE"), PinCost.LOW_MEMORY)
    val password = env("CHARTSYNC_PASSWORD")

    val clerk = tablet.signInOnline("him.jones", password, "111111")
    val chart = store.createChartSigned(
        NewPatient(mrn = "MRN-0078", familyName = "Adeyemi", givenNames = "Tolu", birthDate = "1961-01-09",
            sex = Sex.FEMALE, address = null, phone = null),
        NewEncounter(ward = "4west", bed = "9A", `class` = EncounterClass.INPATIENT, admitSource = null, attending = null),
        clerk,
    )
    val park = tablet.signInOnline("rn.park", password, "135790")
    store.openChartSigned(chart.id(), park).addEntry(heartRate(88))
    park.lock()
    val locked = runCatching { store.openChartSigned(chart.id(), park).addEntry(heartRate(89)) }.exceptionOrNull()
    check(locked is ChartsyncException.Locked) { "a locked session writes nothing, got $locked" }
    val wrong = runCatching { tablet.unlock("rn.park", "000000") }.exceptionOrNull()
    check(wrong is ChartsyncException.WrongPin) { "a wrong PIN is WrongPin, got $wrong" }
    check(tablet.people().first { it.user == "rn.park" }.pinAttemptsLeft == 4u) { "${tablet.people()}" }
    val again = tablet.unlock("rn.park", "135790")
    store.openChartSigned(chart.id(), again).addEntry(heartRate(90))

    val config = SyncConfig(url = tablet.syncUrl(), deviceId = tablet.deviceId(), wards = tablet.wards())
    val client = SyncClient.start(store, config, tablet.sessionToken(), null)
    check(runBlocking { client.waitUntilUpToDate(20_000uL) }) { "not up to date: ${client.status()}" }
    val status = client.status()
    check(status.unacknowledged == 0uL && status.held.isEmpty()) { "everything acknowledged: $status" }

    // A code blue on 5east: break-glass opens that patient's chart to her for 4 hours.
    val office = ChartStore.open(File(work, "kotlin-5east-office.db").path, key(10))
    val clerk5east = Staff(user = "him.jones", role = Role.TECHNICIAN, device = "records-pc-5")
    val elsewhere = office.createChart(
        NewPatient(mrn = "MRN-0079", familyName = "Haddad", givenNames = "Omar", birthDate = null,
            sex = Sex.MALE, address = null, phone = null),
        NewEncounter(ward = "5east", bed = "2C", `class` = EncounterClass.INPATIENT, admitSource = null, attending = null),
        clerk5east,
    ).id()
    val pc = SyncClient.start(office, SyncConfig(env("CHARTSYNC_URL"), "records-pc-5", listOf("5east")),
        env("CHARTSYNC_TOKEN_5EAST"), null)
    check(runBlocking { pc.waitUntilUpToDate(20_000uL) }) { "the 5east admission did not sync" }
    runBlocking { pc.stop() }
    val ends = tablet.breakGlass(again, elsewhere, BreakGlassReason.EMERGENCY_TREATMENT, "code blue in the corridor")
    check(ends.isAfter(java.time.Instant.now().plusSeconds(3 * 3600))) { "the grant lasts 4 hours: $ends" }
    client.fetch(elsewhere)
    eventually("the 5east chart on the tablet") { store.summary(elsewhere) }
    store.openChartSigned(elsewhere, again).addEntry(heartRate(130))
    check(runBlocking { client.waitUntilUpToDate(20_000uL) }) { "not up to date: ${client.status()}" }
    check(client.status().unacknowledged == 0uL) { "her entry under break-glass acknowledged: ${client.status()}" }
    runBlocking { client.stop() }
}

fun main() {
    val tests = listOf(
        "a shared tablet signs people in and syncs their signed work" to ::aSharedTabletSignsPeopleInAndSyncsTheirSignedWork,
        "an expired sign-in waits for a new token" to ::anExpiredSignInWaitsForANewToken,
        "a held chart is shown, and a throwing listener keeps hearing" to ::aHeldChartIsShownAndAThrowingListenerKeepsHearing,
        "the bindings match the library" to ::bindingsMatchTheLibrary,
        "a tablet admits and records offline, then syncs" to ::aTabletAdmitsAndRecordsOfflineThenSyncs,
        "a signed note is corrected by amendment" to ::aSignedNoteIsCorrectedByAmendment,
    )
    val started = System.nanoTime()
    var failed = 0
    for ((name, test) in tests) {
        try {
            test()
            println("ok      $name")
        } catch (e: Throwable) {
            failed++
            println("FAILED  $name: $e")
            e.printStackTrace()
        }
    }
    val seconds = (System.nanoTime() - started) / 1e9
    // The same closing line as pytest's, which .ci/run counts.
    println("${tests.size - failed} passed, $failed failed in ${"%.2f".format(seconds)}s")
    System.exit(if (failed == 0) 0 else 1)
}
