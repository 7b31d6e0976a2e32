// An automerge-repo 2.5 client whose change to one chart the server holds for review. It
// creates two charts, rewrites the first one's MRN (which never changes after admission),
// hears the server's per-chart notice as an `ephemeral-message` on that chart's handle, and
// carries on with the second chart on the same connection. Run by tests/tests/interop.rs:
//   node held.mjs <ws-url> <token>
// Prints: CREATED <held-id> <other-id>, HELD <json notice>, CHANGED.
import { Repo, ImmutableString } from "@automerge/automerge-repo"
import { WebSocketClientAdapter } from "@automerge/automerge-repo-network-websocket"

const [url, token] = process.argv.slice(2)
const I = (s) => new ImmutableString(s)
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))
const at = new Date().toISOString().replace(/\.\d+Z$/, "Z")

const repo = new Repo({
  network: [new WebSocketClientAdapter(`${url}?token=${encodeURIComponent(token)}`)],
})

const admit = (mrn, bed) =>
  repo.create({
    schema: I("chartsync/chart@1"),
    patient: {
      mrn: I(mrn), family_name: I("Okoro"), given_names: I("Chidi"),
      birth_date: I("1949-07-30"), sex: I("male"),
    },
    encounter: {
      ward: I("4west"), bed: I(bed), class: I("inpatient"), admitted_at: I(at),
      status: I("active"),
    },
    events: [{
      id: I(crypto.randomUUID()), kind: I("admit"), at: I(at), by: I("him.jones"),
      ward: I("4west"), bed: I(bed),
    }],
    entries: {}, signatures: [], amendments: [], coding: {}, queries: {}, forms: {},
    roi_requests: {}, disclosures: [], case_log: [], handovers: [],
  })

const held = admit("MRN-7101", "9B")
const other = admit("MRN-7102", "9C")
console.log(`CREATED ${held.documentId} ${other.documentId}`)

const notices = []
held.on("ephemeral-message", ({ message }) => notices.push(message))

// Let both charts reach the server first, then break a rule on the first.
await sleep(1500)
held.change((d) => {
  d.patient.mrn = I("MRN-0000")
})

const deadline = Date.now() + 60_000
while (notices.length === 0) {
  if (Date.now() > deadline) {
    console.log("TIMEOUT waiting for the server's notice")
    process.exit(1)
  }
  await sleep(100)
}
console.log(`HELD ${JSON.stringify(notices[0])}`)

// The connection carries on: the other chart still syncs.
other.change((d) => {
  d.patient.phone = I("555-0142")
})
console.log("CHANGED")
await sleep(3000)
process.exit(0)
