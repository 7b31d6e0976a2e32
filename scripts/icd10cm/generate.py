#!/usr/bin/env python3
"""Regenerate core/data/icd10cm/icd10cm.tsv.gz, the ICD-10-CM table that
chartsync-core embeds (see core/src/codes/ and core/data/icd10cm/PROVENANCE.md).

    python3 -m pip install -r scripts/icd10cm/requirements.txt
    python3 scripts/icd10cm/generate.py            # writes the file
    python3 scripts/icd10cm/generate.py --check    # fails if the committed file differs

The source is the CDC/NCHS ICD-10-CM tabular list (public domain) as carried by
the PyPI package simple-icd-10-cm, pinned in requirements.txt. Only categories
(3 characters), subcategories and codes are emitted -- not chapters or blocks --
one per line, sorted by code (byte order), as

    CODE <TAB> BILLABLE <TAB> DESCRIPTION

where CODE is the dotted form (E11, E11.9, T36.0X1A), BILLABLE is 1 for a leaf
of the tabular list (a code valid for reporting) and 0 otherwise, and every run
of whitespace in DESCRIPTION (the source has a few tabs) becomes one space.

The output is byte-identical on every run: gzip level 9, mtime 0, no file name
in the header (Python's gzip module always writes OS = 255 "unknown").
"""

import argparse
import gzip
import hashlib
import io
import re
import sys
from importlib import metadata
from pathlib import Path

PACKAGE = "simple-icd-10-cm"
PINNED_VERSION = "1.5.0"

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUTPUT = REPO_ROOT / "core" / "data" / "icd10cm" / "icd10cm.tsv.gz"

CODE_SHAPE = re.compile(r"^[A-Z][0-9A-Z]{2}(\.[0-9A-Z]{1,4})?$")
WHITESPACE = re.compile(r"\s+")


def build_table() -> bytes:
    import simple_icd_10_cm as cm

    rows = {}
    for code in cm.get_all_codes(True):
        if not cm.is_category_or_subcategory(code):
            continue  # chapters ("1") and blocks ("A00-A09")
        if not CODE_SHAPE.match(code):
            raise SystemExit(f"unexpected code shape in source: {code!r}")
        # Some codes name both a block and its only category (B99, Z68, ...): the
        # library returns them twice; the default prioritize_blocks=False reads them
        # as the category, which is what we want.
        billable = "1" if cm.is_leaf(code) else "0"
        description = WHITESPACE.sub(" ", cm.get_description(code)).strip()
        if not description:
            raise SystemExit(f"empty description for {code}")
        row = (billable, description)
        if rows.setdefault(code, row) != row:
            raise SystemExit(f"conflicting data for {code}: {rows[code]} vs {row}")

    lines = [f"{code}\t{b}\t{d}\n" for code, (b, d) in sorted(rows.items())]
    return "".join(lines).encode("utf-8")


def compress(raw: bytes) -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", compresslevel=9, fileobj=buf, mtime=0) as gz:
        gz.write(raw)
    return buf.getvalue()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--check", action="store_true",
                        help="do not write; exit 1 if the file on disk differs")
    args = parser.parse_args()

    version = metadata.version(PACKAGE)
    if version != PINNED_VERSION:
        print(f"{PACKAGE} {version} is installed; this table is built from "
              f"{PINNED_VERSION} (scripts/icd10cm/requirements.txt)", file=sys.stderr)
        return 2

    raw = build_table()
    gz = compress(raw)
    lines = raw.decode("utf-8").splitlines()
    billable = sum(1 for line in lines if line.split("\t")[1] == "1")

    print(f"entries:           {len(lines)}")
    print(f"billable:          {billable}")
    print(f"raw bytes:         {len(raw)}")
    print(f"gzip bytes:        {len(gz)}")
    print(f"sha256 (tsv):      {hashlib.sha256(raw).hexdigest()}")
    print(f"sha256 (tsv.gz):   {hashlib.sha256(gz).hexdigest()}")

    if args.check:
        current = args.output.read_bytes() if args.output.exists() else b""
        if current != gz:
            same_text = current and gzip.decompress(current) == raw
            print(f"{args.output} is out of date"
                  + (" (same table; only the compressed bytes differ)" if same_text else ""),
                  file=sys.stderr)
            return 1
        print(f"{args.output} is up to date")
        return 0

    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_bytes(gz)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
