// Validates FHIR R4 bundles with the npm `fhir` package (4.x, R4 4.0.1 value sets): every
// file named on the command line must have no message of severity error or fatal.
// Prints "N passed, M failed in Xs", which .ci/run counts; exits non-zero on any failure.
"use strict";

const fs = require("fs");
const { Fhir } = require("fhir");

const started = Date.now();
const files = process.argv.slice(2);
if (files.length === 0) {
  console.error("no bundles to validate");
  process.exit(2);
}
const fhir = new Fhir();
let passed = 0;
let failed = 0;
for (const file of files) {
  const bundle = JSON.parse(fs.readFileSync(file, "utf8"));
  const result = fhir.validate(bundle, { errorOnUnexpected: true });
  const errors = result.messages.filter(
    (m) => m.severity === "error" || m.severity === "fatal"
  );
  if (result.valid && errors.length === 0) {
    passed += 1;
    console.log(`ok   fhir.js ${file} (${bundle.entry.length} resources)`);
  } else {
    failed += 1;
    console.log(`FAIL fhir.js ${file}`);
    for (const m of errors) {
      console.log(`     ${m.severity} at ${m.location}: ${m.message}`);
    }
  }
}
const seconds = ((Date.now() - started) / 1000).toFixed(2);
console.log(`${passed} passed, ${failed} failed in ${seconds}s`);
process.exit(failed === 0 ? 0 : 1);
