"""Validates FHIR R4 bundles with fhir.resources 6.4.0 (R4 4.0.1, pydantic models): every
file named on the command line must parse as a Bundle, every resource in it included; an
`.ndjson` file (a Bulk Data export's) line by line, each resource by its own model.
Prints "N passed, M failed in Xs", which .ci/run counts; exits non-zero on any failure."""

import json
import sys
import time

from fhir.resources import get_fhir_model_class
from fhir.resources.bundle import Bundle


def validate_ndjson(path):
    """A Bulk Data export's NDJSON file: each line one resource, each parsed by its own model.
    1 if every line passes, else 0."""
    with open(path, encoding="utf-8") as f:
        lines = [line for line in f if line.strip()]
    bad = 0
    for n, line in enumerate(lines, 1):
        data = json.loads(line)
        try:
            get_fhir_model_class(data["resourceType"]).parse_obj(data)
        except Exception as e:  # pydantic.ValidationError, KeyError for an unknown type
            bad += 1
            print(f"FAIL fhir.resources {path} line {n}")
            for message in str(e).splitlines():
                print(f"     {message}")
    if bad == 0 and lines:
        print(f"ok   fhir.resources {path} ({len(lines)} resources, line by line)")
        return 1
    print(f"FAIL fhir.resources {path}: {bad} of {len(lines)} lines")
    return 0


def main(files):
    started = time.monotonic()
    if not files:
        print("no bundles to validate", file=sys.stderr)
        return 2
    passed = failed = 0
    for path in files:
        if path.endswith(".ndjson"):
            ok = validate_ndjson(path)
            passed += ok
            failed += 1 - ok
            continue
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        try:
            bundle = Bundle.parse_obj(data)
            # Parsing checks each entry's resource against its own model.
            count = len(bundle.entry or [])
            if count != len(data.get("entry", [])):
                raise ValueError(f"{count} of {len(data['entry'])} entries parsed")
        except Exception as e:  # pydantic.ValidationError, and LookupError for unknown types
            failed += 1
            print(f"FAIL fhir.resources {path}")
            for line in str(e).splitlines():
                print(f"     {line}")
            continue
        passed += 1
        print(f"ok   fhir.resources {path} ({count} resources)")
    print(f"{passed} passed, {failed} failed in {time.monotonic() - started:.2f}s")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
