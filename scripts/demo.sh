#!/usr/bin/env bash
# The main job, as root on a Debian 12 machine: installs what is missing,
# builds (or reuses) the test kernel and the module, then boots a guest with
# three SATA disks in which a plain disk holding ext4 and files becomes, while
# mounted and written to, a raid5 volume over itself and the two other disks.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/.."
export PATH=$HOME/.cargo/bin:$PATH
bash scripts/install-deps.sh
bash scripts/kernel.sh > /dev/null
make -s
bash scripts/guest.sh --disks 3 --size 256M -- bash scripts/demo-guest.sh
