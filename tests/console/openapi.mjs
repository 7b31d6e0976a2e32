// Validates the server's OpenAPI document with a validator nobody on the team wrote
// (@readme/openapi-parser: the OpenAPI 3.1 schema, then every $ref resolved). Run by
// tests/tests/console.rs:  node openapi.mjs <server-url>
// Prints one line `RESULT <json>` ({version, paths, operations}); exits non-zero with the
// validator's errors otherwise.
import { validate, compileErrors } from "@readme/openapi-parser"

const [base] = process.argv.slice(2)
const response = await fetch(`${base}/api/openapi.json`)
if (!response.ok) {
  console.error(`FAILED: GET /api/openapi.json answered ${response.status}`)
  process.exit(1)
}
const doc = await response.json()
const result = await validate(structuredClone(doc))
if (!result.valid) {
  console.error(`FAILED: the document is not valid OpenAPI:\n${compileErrors(result)}`)
  process.exit(1)
}
const methods = ["get", "put", "post", "delete", "patch"]
const operations = Object.values(doc.paths).flatMap((item) => methods.filter((m) => item[m]))
console.log(`RESULT ${JSON.stringify({ version: doc.openapi, paths: Object.keys(doc.paths).length, operations: operations.length })}`)
