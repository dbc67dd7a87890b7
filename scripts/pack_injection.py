"""Write the injection classifier's serving file from the trainer's stored JSON (no retraining).

``scripts/train_injection.py`` writes ``injection_lr.json.gz`` (feature strings, int8 weights);
the gateway loads ``injection_lr.pack.z``, the same int8 weights laid out as arrays (see
``InjectionClassifier.to_pack``), because parsing the JSON into 140k string-keyed entries cost
~60 MB of RSS and a second of start-up. The output is deterministic, so ``--check`` (and the
test ``tests/safety/test_detect_speedup_weights.py``) can prove the shipped pack is this
JSON's.

    .venv/bin/python scripts/pack_injection.py           # rewrite the pack next to the JSON
    .venv/bin/python scripts/pack_injection.py --check   # exit 1 if the shipped pack differs
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bastion.safety.prompting.classifier import MODEL_RESOURCE, PACK_RESOURCE, InjectionClassifier

DATA = Path(__file__).resolve().parents[1] / "src" / "bastion" / "safety" / "prompting" / "data"


def pack(json_blob: bytes) -> bytes:
    return InjectionClassifier.from_json(json_blob).to_pack()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", type=Path, default=DATA / MODEL_RESOURCE)
    ap.add_argument("--out", type=Path, default=DATA / PACK_RESOURCE)
    ap.add_argument("--check", action="store_true", help="compare with --out instead of writing")
    args = ap.parse_args()
    blob = pack(args.json.read_bytes())
    if args.check:
        same = args.out.is_file() and args.out.read_bytes() == blob
        print(f"{args.out}: {'matches' if same else 'DIFFERS from'} {args.json}")
        return 0 if same else 1
    args.out.write_bytes(blob)
    print(f"wrote {args.out} ({len(blob) / 1e6:.2f} MB) from {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
