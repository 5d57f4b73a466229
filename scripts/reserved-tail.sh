#!/usr/bin/env bash
# Prints the size, in 512-byte sectors, of the reserved tail that raidmig
# keeps at the end of every member (superblocks and staging area). The one
# definition is RESERVED_TAIL_SECTORS in src/core/layout.rs; scripts and
# tests read it from there through this script instead of repeating it.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
src=$top/src/core/layout.rs
shift_expr=$(sed -n 's/^pub const SECTOR_SHIFT: [a-z0-9]* = \([0-9]*\);.*/\1/p' "$src")
expr=$(sed -n 's/^pub const RESERVED_TAIL_SECTORS: u64 = \(.*\);.*/\1/p' "$src")
# Only digits, shifts, arithmetic and SECTOR_SHIFT may appear in it.
if [ -z "$shift_expr" ] || [ -z "$expr" ] || ! [[ $expr =~ ^[0-9A-Z_\ \<\>\(\)*+-]+$ ]]; then
  echo "reserved-tail.sh: cannot read RESERVED_TAIL_SECTORS from $src" >&2
  exit 1
fi
echo $(( ${expr//SECTOR_SHIFT/$shift_expr} ))
