#!/bin/bash
# What each VM runs (via run.sh, as root, in the repo root): what `doctor` says
# on this kernel, the privileged suite with the preferred mechanisms, then the
# probe tests again with each fallback forced, checking the same fields.
set -u
out=vm-tests/out/$(uname -r)
mkdir -p "$out"
py=.venv/bin/python
export BPFCAP_TEST_BACKENDS=${BPFCAP_TEST_BACKENDS:-asyncio}
pytest() { "$py" -m pytest -q -p no:cacheprovider --durations=5 "$@"; }
rc=0

$py -m bpfcap doctor --json > "$out/doctor.json" || rc=1
# What depends on the kernel; the command line and sessions (userspace over
# the same calls) run on the host only, to fit three kernels in the CI budget.
kernel_tests="tests/integration/test_process_events.py tests/integration/test_probes.py
  tests/integration/test_user_probes.py tests/integration/test_filters.py tests/integration/test_pipeline.py
  tests/integration/test_reliability.py tests/integration/test_privileges.py"
echo "== preferred mechanisms"
pytest $kernel_tests || rc=1
echo "== fentry/fexit forced (kprobe and LSM disabled)"
BPFCAP_DISABLE_MECHANISMS=kprobe,lsm pytest tests/integration/test_probes.py || rc=1
BPFCAP_DISABLE_MECHANISMS=kprobe,lsm $py -m bpfcap doctor --json > "$out/doctor-fentry.json"
echo "== tracepoint fallbacks forced (kprobe, fentry and LSM disabled)"
BPFCAP_DISABLE_MECHANISMS=kprobe,fentry,lsm pytest tests/integration/test_probes.py || rc=1
BPFCAP_DISABLE_MECHANISMS=kprobe,fentry,lsm $py -m bpfcap doctor --json > "$out/doctor-tracepoint.json"
exit $rc
