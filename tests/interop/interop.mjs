// An automerge-repo 2.5 client that knows chartsync only from docs/chart-schema.md.
// It creates a chart on the server, waits for an entry another device writes, then changes
// the patient's phone number. Run by server/tests/interop.rs:
//   node interop.mjs <ws-url> <token>
// Prints: CREATED <documentId>, SAW_ENTRY <value>, CHANGED.
import { Repo, ImmutableString } from "@automerge/automerge-repo"
import { WebSocketClientAdapter } from "@automerge/automerge-repo-network-websocket"

const [url, token] = process.argv.slice(2)
const I = (s) => new ImmutableString(s)
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

// The canonical timestamp form (docs/chart-schema.md, Conventions).
function canonicalTimestamp(s) {
  const m = /^(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(?:\.(\d+))?(?:[Zz]|[+-]00:00)$/.exec(s)
  if (!m) throw new RangeError(`not an RFC 3339 UTC timestamp: ${s}`)
  const frac = (m[3] ?? "").slice(0, 9).replace(/0+$/, "")
  return `${m[1]}T${m[2]}${frac ? "." + frac : ""}Z`
}
const chartTime = (date = new Date()) => canonicalTimestamp(date.toISOString())

const repo = new Repo({
  network: [new WebSocketClientAdapter(`${url}?token=${encodeURIComponent(token)}`)],
})

const at = chartTime()
const handle = repo.create({
  schema: I("chartsync/chart@1"),
  patient: {
    mrn: I("MRN-7001"), family_name: I("Okoro"), given_names: I("Chidi"),
    birth_date: I("1949-07-30"), sex: I("male"),
  },
  encounter: {
    ward: I("4west"), bed: I("9B"), class: I("inpatient"), admitted_at: I(at),
    status: I("active"),
  },
  events: [{
    id: I(crypto.randomUUID()), kind: I("admit"), at: I(at), by: I("him.jones"),
    ward: I("4west"), bed: I("9B"),
  }],
  entries: {}, signatures: [], amendments: [], coding: {}, queries: {}, forms: {},
  roi_requests: {}, disclosures: [], case_log: [], handovers: [],
})
console.log(`CREATED ${handle.documentId}`)

const deadline = Date.now() + 60_000
for (;;) {
  const doc = handle.doc()
  const ids = Object.keys(doc.entries)
  if (ids.length > 0) {
    console.log(`SAW_ENTRY ${String(doc.entries[ids[0]].value)}`)
    break
  }
  if (Date.now() > deadline) {
    console.log("TIMEOUT waiting for an entry")
    process.exit(1)
  }
  await sleep(100)
}

handle.change((d) => {
  d.patient.phone = I("555-0199")
}, { message: "change of information" })
console.log("CHANGED")
// Give the adapter time to send it before exiting.
await sleep(3000)
process.exit(0)
