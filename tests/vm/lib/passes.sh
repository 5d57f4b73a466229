# Sourced by the guest side of the power cut tests: fio passes that each
# write and verify a file of their own under $MNT/fio (PASS_SIZE bytes,
# default 8M), and the check of everything that must have survived a cut.
# $OUT/fio.log records "done K" once pass K completed with its fsync and
# "gone K" before its file is removed; $OUT/old.sums and $OUT/new.sums hold
# the checksums of the files made before the load and of those fsynced
# during it. The caller sets MNT, boot and BEFORE (what the first files
# precede, for messages).

# pass_args K: the fio options of pass K.
pass_args() {
  echo --name=pass$1 --filename=$MNT/fio/p$1 --size=${PASS_SIZE:-8M} --rw=randwrite --bs=4k \
      --direct=1 --ioengine=libaio --iodepth=8 --verify=crc32c --do_verify=1 \
      --verify_fatal=1 --randseed=$1 --end_fsync=1 --verify_state_save=0
}
fio_pass() { fio $(pass_args $1) --aux-path=/tmp --output=/tmp/fio.pass$1 > /dev/null 2>&1; }

# verify_all: the files from before, the fsynced ones, and every completed
# pass whose file is still there (in one fio process).
verify_all() {
  check "boot $boot: files from before $BEFORE" bash -c "cd $MNT && sha256sum --quiet -c $OUT/old.sums"
  if [ -s "$OUT/new.sums" ]; then
    check "boot $boot: $(wc -l < "$OUT/new.sums") fsynced files" bash -c "cd $MNT && sha256sum --quiet -c $OUT/new.sums"
  fi
  local k n=0 args=()
  for k in $(awk '$1 == "done" {print $2}' "$OUT/fio.log" 2>/dev/null); do
    grep -qx "gone $k" "$OUT/fio.log" && continue
    n=$((n + 1))
    args+=($(pass_args "$k"))
  done
  [ $n = 0 ] || check "boot $boot: $n completed fio passes verify" verify_jobs /tmp/fio.verify "${args[@]}"
}
