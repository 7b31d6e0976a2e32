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
// A Bulk Data export's NDJSON file: each line one resource, each validated on its own.
function validateNdjson(file) {
  const lines = fs.readFileSync(file, "utf8").split("\n").filter((l) => l.length > 0);
  let bad = 0;
  lines.forEach((line, n) => {
    const result = fhir.validate(JSON.parse(line), { errorOnUnexpected: true });
    const errors = result.messages.filter(
      (m) => m.severity === "error" || m.severity === "fatal"
    );
    if (!result.valid || errors.length > 0) {
      bad += 1;
      console.log(`FAIL fhir.js ${file} line ${n + 1}`);
      for (const m of errors) {
        console.log(`     ${m.severity} at ${m.location}: ${m.message}`);
      }
    }
  });
  return [lines.length, bad];
}

for (const file of files) {
  if (file.endsWith(".ndjson")) {
    const [lines, bad] = validateNdjson(file);
    if (bad === 0 && lines > 0) {
      passed += 1;
      console.log(`ok   fhir.js ${file} (${lines} resources, line by line)`);
    } else {
      failed += 1;
      console.log(`FAIL fhir.js ${file}: ${bad} of ${lines} lines`);
    }
    continue;
  }
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
