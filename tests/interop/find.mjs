// An automerge-repo 2.5 client that opens a chart the server already has, and reports how
// many entries it holds once that many have arrived. Run by tests/tests/interop.rs:
//   node find.mjs <ws-url> <token> <documentId> <entries>
// Prints: FOUND <entries>, or TIMEOUT with what it had.
import { Repo } from "@automerge/automerge-repo"
import { WebSocketClientAdapter } from "@automerge/automerge-repo-network-websocket"

const [url, token, documentId, wanted] = process.argv.slice(2)
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

const repo = new Repo({
  network: [new WebSocketClientAdapter(`${url}?token=${encodeURIComponent(token)}`)],
})
const handle = await repo.find(documentId)
const deadline = Date.now() + 60_000
for (;;) {
  const n = Object.keys(handle.doc().entries ?? {}).length
  if (n >= Number(wanted)) {
    console.log(`FOUND ${n}`)
    break
  }
  if (Date.now() > deadline) {
    console.log(`TIMEOUT with ${n} entries`)
    process.exit(1)
  }
  await sleep(100)
}
await repo.shutdown()
process.exit(0)
