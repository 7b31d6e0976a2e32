// automerge-repo 2.5 as a sync server (its NodeWSServerAdapter), holding one chart written from
// docs/chart-schema.md, for our device client to sync with. Run by server/tests/interop.rs:
//   node serve.mjs
// Prints: LISTENING <port>, CHART <documentId>, SAW_ENTRY <value>.
import { Repo, ImmutableString } from "@automerge/automerge-repo"
import { WebSocketServerAdapter } from "@automerge/automerge-repo-network-websocket"
import { WebSocketServer } from "ws"

const I = (s) => new ImmutableString(s)
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

const wss = new WebSocketServer({ host: "127.0.0.1", port: 0 })
await new Promise((r) => wss.on("listening", r))
const repo = new Repo({
  network: [new WebSocketServerAdapter(wss)],
  // A server shares every document it has with whoever asks.
  sharePolicy: async () => true,
})

const at = new Date().toISOString().replace(/\.\d+Z$/, "Z")
const handle = repo.create({
  schema: I("chartsync/chart@1"),
  patient: { mrn: I("MRN-8002"), family_name: I("Haddad"), given_names: I("Lina") },
  encounter: {
    ward: I("5east"), bed: I("4"), class: I("inpatient"), admitted_at: I(at), status: I("active"),
  },
  events: [{
    id: I(crypto.randomUUID()), kind: I("admit"), at: I(at), by: I("him.jones"),
    ward: I("5east"), bed: I("4"),
  }],
  entries: {}, signatures: [], amendments: [], coding: {}, queries: {}, forms: {},
  roi_requests: {}, disclosures: [], case_log: [], handovers: [],
})
console.log(`LISTENING ${wss.address().port}`)
console.log(`CHART ${handle.documentId}`)

const deadline = Date.now() + 60_000
for (;;) {
  const ids = Object.keys(handle.doc().entries)
  if (ids.length > 0) {
    console.log(`SAW_ENTRY ${String(handle.doc().entries[ids[0]].value)}`)
    break
  }
  if (Date.now() > deadline) {
    console.log("TIMEOUT waiting for an entry")
    process.exit(1)
  }
  await sleep(100)
}
await sleep(500)
process.exit(0)
