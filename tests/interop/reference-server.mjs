// automerge-repo 2.5.6's own sync server, set up as automerge-repo-sync-server sets it up
// (a WebSocket server adapter, documents on disk, no documents announced to peers), for the
// side-by-side benchmark (tests/benches/sidebyside):
//   node reference-server.mjs DATA_DIR
// Prints: LISTENING <port>.
import { Repo } from "@automerge/automerge-repo"
import { WebSocketServerAdapter } from "@automerge/automerge-repo-network-websocket"
import { NodeFSStorageAdapter } from "@automerge/automerge-repo-storage-nodefs"
import { WebSocketServer } from "ws"

const dir = process.argv[2]
if (!dir) {
  console.error("usage: node reference-server.mjs DATA_DIR")
  process.exit(2)
}
const wss = new WebSocketServer({ host: "127.0.0.1", port: 0, path: "/sync" })
await new Promise((r) => wss.on("listening", r))
const adapter = new WebSocketServerAdapter(wss)
new Repo({
  network: [adapter],
  storage: new NodeFSStorageAdapter(dir),
  sharePolicy: async () => false,
})
// The repo connects its network adapter only once storage has given it its storage id; a
// socket accepted before that is never read (and is dropped at the first keep-alive), so the
// port is announced after.
while (!adapter.peerId) await new Promise((r) => setTimeout(r, 5))
console.log(`LISTENING ${wss.address().port}`)
