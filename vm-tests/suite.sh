#!/bin/bash
# What each VM runs (via run.sh, as root, in the repo root): the privileged
# suite with the preferred mechanisms, and the probe tests again with each
# fallback forced (checking the same fields), all in one pytest run: starting
# Python over 9p under software emulation costs ~25 s each time.
set -u
out=vm-tests/out/$(uname -r)
mkdir -p "$out"
export PYTHONUNBUFFERED=1  # each test's dot reaches the console at once: the runner sees progress
export BPFCAP_TEST_BACKENDS=${BPFCAP_TEST_BACKENDS:-asyncio}
export BPFCAP_RELIABILITY_CYCLES=${BPFCAP_RELIABILITY_CYCLES:-20}
# test_probes.py runs each test with nothing disabled, then with kprobe and LSM
# disabled (fentry/fexit), then with fentry too (tracepoints); it writes what
# `bpfcap doctor --json` said and each mechanism it used to $out for the summary.
export BPFCAP_TEST_FORCINGS=${BPFCAP_TEST_FORCINGS-";kprobe,lsm;kprobe,fentry,lsm"}
export BPFCAP_RESULTS_DIR=$out
# What depends on the kernel; the command line and sessions (userspace over
# the same calls) run on the host only, to fit three kernels in the CI budget.
kernel_tests="tests/integration/test_process_events.py tests/integration/test_probes.py
  tests/integration/test_user_probes.py tests/integration/test_filters.py tests/integration/test_pipeline.py
  tests/integration/test_reliability.py tests/integration/test_privileges.py"
# Userspace only, or the same whatever the mechanism: on the host.
host_only="test_reliability.py::test_a_killed_bpfcap_run_leaves_nothing[SIGINT]
  test_reliability.py::test_a_killed_bpfcap_run_leaves_nothing[SIGTERM]
  test_reliability.py::test_two_bpfcap_processes_at_once
  test_privileges.py::test_one_of_the_two_missing
  test_probes.py::test_doctor_agrees_with_the_probes[disabled:kprobe,lsm]
  test_probes.py::test_doctor_agrees_with_the_probes[disabled:kprobe,fentry,lsm]"
.venv/bin/python -m pytest -q -p no:cacheprovider --durations=15 $kernel_tests \
  $(for t in $host_only; do echo "--deselect tests/integration/$t"; done)
