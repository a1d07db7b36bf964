#!/bin/bash
# Run a command as root inside virtme-ng VMs, one per kernel of a matrix.
#
#   vm-tests/run.sh [COMMAND...]     e.g. vm-tests/run.sh .venv/bin/python -m pytest -q tests
#
# COMMAND is joined with spaces and run by bash in the guest, cwd = the repo root
# (like ssh: quote shell syntax, e.g. run.sh 'uname -r && id'); default: true.
# Before it, the guest checks that `uname -r` is the expected kernel and that the
# BPF LSM is active (/sys/kernel/security/lsm lists bpf).
# The guest sees this machine's filesystem read-only (9p); the repo is writable
# through a throw-away overlay, and vm-tests/out/ is shared read-write.
#
# Environment (more in vm-tests/README.md):
#   BPFCAP_VM_KERNELS  labels or vmlinuz paths (default: "5.10 6.1 6.12", plus
#                      "host" if /boot/vmlinuz-$(uname -r) exists)
#   BPFCAP_VM_STALL    a kernel whose console printed nothing for this many seconds
#                      is taken for hung and stopped (default 300): a slow, loaded
#                      machine is not a hang, so there is no fixed budget per test
#   BPFCAP_VM_TIMEOUT  seconds per kernel at the very most, boot + command (default 2400)
#   BPFCAP_VM_JOBS     kernels run at once (default 2)
#   BPFCAP_VM_CPUS / BPFCAP_VM_MEMORY   (default 1 / 2G; see vm-tests/README.md for why 1)
#   BPFCAP_VM_CACHE    kernel + virtme-ng cache (default /var/cache/bpfcap-vm)
#   BPFCAP_VM_VNG      vng binary (default $BPFCAP_VM_CACHE/venv/bin/vng, else PATH)
#   BPFCAP_VM_TAIL     log lines shown for a failed kernel (default 40)
#   other BPFCAP_*     exported into the guest
#
# Needs, as root (see vm-tests/README.md):
#   apt-get install -y --no-install-recommends qemu-system-x86 busybox-static kmod
#     (and file binutils python3-venv debian-archive-keyring, already on the image)
#   /usr/bin/python3 -m venv /var/cache/bpfcap-vm/venv
#   /var/cache/bpfcap-vm/venv/bin/pip install virtme-ng==1.42
# Output: vm-tests/out/<kernel>.log (whole console), one line per kernel
#   "VMTEST RESULT <kernel> PASS|FAIL <seconds>", then a summary table;
#   exit status 1 if any kernel failed.
set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
OUT=$HERE/out
CACHE=${BPFCAP_VM_CACHE:-/var/cache/bpfcap-vm}
TIMEOUT=${BPFCAP_VM_TIMEOUT:-2400}
STALL=${BPFCAP_VM_STALL:-300}
VNG=${BPFCAP_VM_VNG:-$CACHE/venv/bin/vng}
[ -x "$VNG" ] || VNG=$(command -v vng) || { echo "vng not found: see vm-tests/README.md" >&2; exit 2; }
export PATH=$(dirname "$VNG"):$PATH    # vng runs virtme-run from PATH
HOST_IMG=/boot/vmlinuz-$(uname -r)
KERNELS=${BPFCAP_VM_KERNELS:-5.10 6.1 6.12$([ -f "$HOST_IMG" ] && echo " host")}
CMD=${*:-true}
mkdir -p "$OUT"
cd "$ROOT" || exit 2

now() { echo "$EPOCHREALTIME"; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

watchdog() {  # $1 raw console log, $2 the guest script: stops the VM once its console is silent for $STALL s
    local size last=-1 idle=0
    while sleep 5; do
        size=$(stat -c %s "$1" 2>/dev/null || echo 0)
        if [ "$size" = "$last" ]; then idle=$((idle + 5)); else idle=0 last=$size; fi
        if [ "$idle" -ge "$STALL" ]; then
            : > "$1.stalled"
            pkill -TERM -f -- "$2" # timeout, vng and qemu all name the guest script
            return
        fi
    done
}

run_kernel() {  # $1 label; sets RES, REASON, BOOT_S, TOTAL_S, KVER
    local label=$1 img log=$OUT/${1//\//_}.log start booted="" rc line
    RES=FAIL REASON="" BOOT_S=- TOTAL_S=- KVER=?
    : > "$log"
    if [ "$label" = host ]; then img=$HOST_IMG
    elif [ -f "$label" ]; then img=$label
    else img=$("$HERE/kernels.sh" "$label" 2>>"$log" | awk '{print $2}'); fi
    if [ ! -f "$img" ]; then REASON="no kernel image (${img:-fetch failed})"; return; fi
    KVER=$(basename "$img"); KVER=${KVER#vmlinuz-}
    # The guest side: BPFCAP_* variables (not BPFCAP_VM_*) passed on, checks, the
    # command in a subshell, then its exit status.
    local mech=kprobe,fentry,lsm,tracepoint,raw_tracepoint v
    [ "$label" = host ] && mech=tracepoint,raw_tracepoint   # the host's config: no kprobes
    {
        echo "export BPFCAP_EXPECT_MECHANISMS=$mech"
        for v in ${!BPFCAP_@}; do
            [[ $v == BPFCAP_VM_* ]] || printf 'export %s=%q\n' "$v" "${!v}"
        done
        cat <<EOF
echo "VMTEST BOOTED uptime=\$(cut -d' ' -f1 /proc/uptime)"
grep -q ' /sys/kernel/security ' /proc/mounts || mount -t securityfs securityfs /sys/kernel/security
echo "VMTEST CHECK kernel=\$(uname -r) lsm=\$(cat /sys/kernel/security/lsm)"
( $CMD ) < /dev/null 2>&1 | cat    # no tty, no stdin: as in CI
echo "VMTEST GUEST EXIT \${PIPESTATUS[0]}"
EOF
    } > "$log.sh"
    start=$(now)
    rm -f "$log.raw" "$log.raw.stalled"
    watchdog "$log.raw" "$log.sh" &
    local dog=$!
    timeout -k 10 "$TIMEOUT" "$VNG" --run "$img" --verbose --force-9p --disable-kvm \
        --cpus "${BPFCAP_VM_CPUS:-1}" --memory "${BPFCAP_VM_MEMORY:-2G}" \
        --append "lsm=lockdown,capability,landlock,bpf" \
        --user root --cwd "$ROOT" --overlay-rwdir "$ROOT" --rwdir "$OUT" \
        --exec "bash $log.sh" < /dev/null 2>&1 | tee -a "$log.raw" |
    while IFS= read -r line; do
        line=${line%$'\r'}
        printf '%s\n' "$line" >> "$log"
        [[ $line == *"VMTEST BOOTED"* ]] && now > "$log.boot"
        # Show the command's output live; boot and kernel messages go to the log only.
        [ -f "$log.boot" ] && ! [[ $line =~ ^\[\ *[0-9]+\.[0-9]+\]|VMTEST ]] &&
            printf '[%s] %s\n' "$label" "$line"
    done
    rc=${PIPESTATUS[0]}
    kill "$dog" 2>/dev/null
    wait "$dog" 2>/dev/null
    TOTAL_S=$(secs "$start" "$(now)")
    [ -f "$log.boot" ] && booted=$(cat "$log.boot") && BOOT_S=$(secs "$start" "$booted")
    rm -f "$log.boot"
    local check exit_line
    check=$(grep -a -o 'VMTEST CHECK .*' "$log" | tail -n1)
    exit_line=$(grep -a -o 'VMTEST GUEST EXIT [0-9]*' "$log" | tail -n1)
    if [ -f "$log.raw.stalled" ]; then REASON="hung: nothing printed for ${STALL}s"
    elif [ "$rc" = 124 ] || [ "$rc" = 137 ]; then REASON="timeout after ${TIMEOUT}s"
    elif [ -z "$booted" ]; then REASON="did not boot (vng exit $rc)"
    elif [ -z "$exit_line" ]; then REASON="guest died before the command finished (vng exit $rc)"
    elif [[ $check != *"kernel=$KVER "* ]]; then REASON="wrong kernel: ${check:-no check line}"
    elif [[ $check != *lsm=*bpf* ]]; then REASON="BPF LSM not active: $check"
    elif [ "${exit_line##* }" != 0 ]; then REASON="command exited ${exit_line##* }"
    else RES=PASS; fi
    rm -f "$log.raw" "$log.raw.stalled"
    local oops
    oops=$(grep -a -m1 -o -E 'Kernel panic.*|BUG: .*|Oops: .*' "$log" | tr -d '\r')
    [ "$RES" = FAIL ] && [ -n "$oops" ] && REASON="$REASON; $oops"
}

run_one() {  # $1 label: boots it, reports, leaves its summary row in out/<label>.row
    local k=$1 f=$OUT/${1//\//_}
    echo "=== $k: booting (log: ${OUT#$ROOT/}/${k//\//_}.log)"
    run_kernel "$k"
    echo "VMTEST RESULT $k $RES $TOTAL_S"
    if [ "$RES" != PASS ]; then
        echo "--- $k: $REASON; last lines of its log:"
        tail -n "${BPFCAP_VM_TAIL:-40}" "$f.log" | awk -v p="[$k] " '{ print p $0 }'
    fi
    printf '%-8s %-28s %-5s %8s %8s  %s\n' "${k##*/}" "$KVER" "$RES" "$BOOT_S" "$TOTAL_S" "$REASON" > "$f.row"
}

# Up to $JOBS kernels at once, one vCPU each: they share this machine's two cores.
JOBS=${BPFCAP_VM_JOBS:-2}
# Fetch the kernels first, one at a time: apt's private state is not for two.
for k in $KERNELS; do [ "$k" = host ] || [ -f "$k" ] || "$HERE/kernels.sh" "$k" > /dev/null 2>&1; done
for k in $KERNELS; do
    rm -f "$OUT/${k//\//_}.row"
    while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n; done
    run_one "$k" &
done
wait

echo
printf '%-8s %-28s %-5s %8s %8s  %s\n' kernel version result boot_s total_s note
FAILED=0
for k in $KERNELS; do
    row=$(cat "$OUT/${k//\//_}.row" 2>/dev/null) || row="$k (no result)"
    echo "$row"
    [[ $row == *" PASS "* ]] || FAILED=1
done
exit $FAILED
