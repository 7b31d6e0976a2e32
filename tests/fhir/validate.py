"""Validates FHIR R4 bundles with fhir.resources 6.4.0 (R4 4.0.1, pydantic models): every
file named on the command line must parse as a Bundle, every resource in it included.
Prints "N passed, M failed in Xs", which .ci/run counts; exits non-zero on any failure."""

import json
import sys
import time

from fhir.resources.bundle import Bundle


def main(files):
    started = time.monotonic()
    if not files:
        print("no bundles to validate", file=sys.stderr)
        return 2
    passed = failed = 0
    for path in files:
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
