// automerge-repo 2.5.6 as the tablet of the side-by-side benchmark's second view
// (tests/benches/sidebyside, "JS client"): the same upload, first sync and shift reconnect as
// our Rust client runs, written from docs/chart-schema.md alone, against any of the three
// servers. Each step is one process over a tablet's documents on disk (NodeFS storage), so a
// tablet that was offline comes back from its own storage as a real one does:
//
//   node tablet-bench.mjs prepare   DIR USER CHARTS ENTRIES          (offline: write new charts)
//   node tablet-bench.mjs upload    DIR URL                          (send them; until the server has them)
//   node tablet-bench.mjs first     DIR URL OTHER                    (a new tablet takes every chart, as OTHER has it)
//   node tablet-bench.mjs edit      DIR USER EDITS FROM [URL]        (online with URL, else offline)
//   node tablet-bench.mjs reconnect DIR URL OTHER                    (until the server has ours and we have OTHER's)
//
// URL carries the token (`ws://host/sync?token=...`). The chart ids are in DIR/../ids.json and
// each tablet's last heads in DIR/heads.json. Prints `DONE <ms>`: the time from the first
// connection to the end of the step, the documents already loaded from disk.
import { Repo, ImmutableString } from "@automerge/automerge-repo"
import { WebSocketClientAdapter } from "@automerge/automerge-repo-network-websocket"
import { NodeFSStorageAdapter } from "@automerge/automerge-repo-storage-nodefs"
import * as A from "@automerge/automerge"
import { readFileSync, writeFileSync } from "node:fs"
import { dirname, join } from "node:path"

const [step, dir, ...args] = process.argv.slice(2)
const I = (s) => new ImmutableString(s)
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))
const idsFile = join(dirname(dir), "ids.json")
const headsFile = (d) => join(d, "heads.json")
const LIMIT_MS = 600_000

// The canonical timestamp form (docs/chart-schema.md, Conventions): minutes after a fixed start.
const at = (minutes) =>
  new Date(Date.parse("2026-11-27T20:00:00Z") + minutes * 60_000).toISOString().replace(".000Z", "Z")

function chart(n, user) {
  const when = at(0)
  return {
    schema: I("chartsync/chart@1"),
    patient: {
      mrn: I(`MRN-${String(n).padStart(5, "0")}`), family_name: I("Rivera"), given_names: I("Ana"),
      birth_date: I("1957-03-14"), sex: I("female"),
    },
    encounter: {
      ward: I("4west"), bed: I("12A"), class: I("inpatient"), admitted_at: I(when),
      attending: I("dr.okafor"), status: I("active"),
    },
    events: [{
      id: I(crypto.randomUUID()), kind: I("admit"), at: I(when), by: I(user),
      ward: I("4west"), bed: I("12A"),
    }],
    entries: {}, signatures: [], amendments: [], coding: {}, queries: {}, forms: {},
    roi_requests: {}, disclosures: [], case_log: [], handovers: [],
  }
}

// A heart rate, as our Rust client's bench writes it: one entry per change.
function heartRate(handle, user, minutes, bpm) {
  const id = crypto.randomUUID()
  handle.change((d) => {
    d.entries[id] = {
      kind: I("observation"), author: I(user), role: I("nurse"), device: I("tablet-js"),
      shift: I("night"), recorded_at: I(at(minutes)),
      codes: [{ system: I("loinc"), code: I("8867-4") }],
      value: I(String(bpm)), unit: I("/min"), body: "Heart rate", status: I("draft"),
    }
  })
}

// The repo's storage, with every write it starts kept track of: `Repo.flush` does not wait
// for a save the repo started on its own (it may skip a document such a save is writing), and
// a process that exits then leaves that document half written.
class Storage extends NodeFSStorageAdapter {
  pending = new Set()
  track(p) {
    this.pending.add(p)
    return p.finally(() => this.pending.delete(p))
  }
  save(key, data) { return this.track(super.save(key, data)) }
  remove(key) { return this.track(super.remove(key)) }
  removeRange(prefix) { return this.track(super.removeRange(prefix)) }
  async settled() {
    while (this.pending.size > 0) await Promise.allSettled([...this.pending])
  }
}

const storage = new Storage(dir)
const storageOnly = () => new Repo({ storage, saveDebounceRate: 20 })

// Every chart of the bench from this tablet's storage (or, new to it, from the network). A
// chart is never empty: one that is was lost by the storage, and would look in sync with
// anything.
async function open(repo) {
  const ids = JSON.parse(readFileSync(idsFile, "utf8"))
  const handles = await Promise.all(ids.map((id) => repo.find(id)))
  const empty = handles.filter((h) => h.heads().length === 0)
  if (empty.length > 0) throw new Error(`${empty.length} charts are empty in ${dir}`)
  return handles
}

// Connects `repo` to `url` and gives the server's storage id once it has announced itself.
async function connect(repo, url) {
  repo.networkSubsystem.addNetworkAdapter(new WebSocketClientAdapter(url))
  for (;;) {
    const peer = repo.peers[0]
    const storage = peer && repo.getStorageIdOfPeer(peer)
    if (storage) return storage
    await sleep(2)
  }
}

const sorted = (heads) => [...heads].sort()
const same = (a, b) => a.length === b.length && sorted(a).join() === sorted(b).join()

// Until the server has told us it holds every change of ours (its heads as sync state gives them).
async function untilServerHas(handles, server, what) {
  const deadline = Date.now() + LIMIT_MS
  for (;;) {
    const behind = handles.filter((h) => !same(h.getSyncInfo(server)?.lastHeads ?? [], h.heads()))
    if (behind.length === 0) return
    if (Date.now() > deadline) throw new Error(`${what}: ${behind.length} charts never reached the server`)
    await sleep(5)
  }
}

async function untilWeHave(handles, heads, what) {
  const deadline = Date.now() + LIMIT_MS
  for (;;) {
    const missing = handles.filter((h) => !A.hasHeads(h.doc(), heads[h.documentId]))
    if (missing.length === 0) return
    if (Date.now() > deadline) throw new Error(`${what}: ${missing.length} charts never arrived`)
    await sleep(5)
  }
}

function saveHeads(handles, into) {
  const heads = Object.fromEntries(handles.map((h) => [h.documentId, A.getHeads(h.doc())]))
  writeFileSync(headsFile(into), JSON.stringify(heads))
}

async function finish(repo, handles, started) {
  const ms = performance.now() - started
  // Every save on disk before the process ends: those the repo started on its own, the
  // flush, and any the repo's save timer started meanwhile.
  await storage.settled()
  await repo.flush()
  await sleep(50)
  await storage.settled()
  saveHeads(handles, dir)
  console.log(`DONE ${ms.toFixed(1)}`)
  process.exit(0)
}

if (step === "prepare") {
  const [user, charts, entries] = [args[0], Number(args[1]), Number(args[2])]
  const repo = storageOnly()
  const handles = []
  for (let n = 0; n < charts; n++) {
    const handle = repo.create(chart(n, user))
    for (let k = 0; k < entries; k++) heartRate(handle, user, 1 + k, 60 + (k % 60))
    handles.push(handle)
  }
  writeFileSync(idsFile, JSON.stringify(handles.map((h) => h.documentId)))
  await finish(repo, handles, performance.now())
} else if (step === "upload") {
  const repo = storageOnly()
  const handles = await open(repo)
  const started = performance.now()
  const server = await connect(repo, args[0])
  await untilServerHas(handles, server, "upload")
  await finish(repo, handles, started)
} else if (step === "first") {
  const repo = storageOnly()
  const started = performance.now()
  const server = await connect(repo, args[0])
  const handles = await open(repo)
  const theirs = JSON.parse(readFileSync(headsFile(join(dirname(dir), args[1])), "utf8"))
  await untilWeHave(handles, theirs, "first sync")
  await untilServerHas(handles, server, "first sync")
  await finish(repo, handles, started)
} else if (step === "edit") {
  const [user, edits, from, url] = [args[0], Number(args[1]), Number(args[2]), args[3]]
  const repo = storageOnly()
  const handles = await open(repo)
  const started = performance.now()
  const server = url ? await connect(repo, url) : null
  for (const handle of handles) {
    for (let k = 0; k < edits; k++) heartRate(handle, user, from + k, 70 + k)
  }
  if (server) await untilServerHas(handles, server, "edits")
  await finish(repo, handles, started)
} else if (step === "reconnect") {
  const [url, other] = args
  const repo = storageOnly()
  const handles = await open(repo)
  const theirs = JSON.parse(readFileSync(headsFile(join(dirname(dir), other)), "utf8"))
  const started = performance.now()
  const server = await connect(repo, url)
  await untilWeHave(handles, theirs, "reconnect")
  await untilServerHas(handles, server, "reconnect")
  await finish(repo, handles, started)
} else {
  console.error(`unknown step ${step}`)
  process.exit(2)
}
