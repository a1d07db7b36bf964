"""The peer: bcc's Python API (Debian's python3-bpfcc, run by /usr/bin/python3),
the same capture as bpfcap's file_write on the syscall tracepoints — fd from
sys_enter_write, bytes from sys_exit_write, the record header bpfcap sends
(time, pid, tid, uid, gid, cgroup, comm) — minus the path, through a ring
buffer, decoded by ctypes in a Python callback per event, as bcc's tools do.

    /usr/bin/python3 bcc_consumer.py PID CALLS [RING_BYTES [prefill]]

Prints `ready` once attached; when stdin closes prints one JSON line. With
`prefill` it reads nothing until a line on stdin, then times draining the ring.
"""

import json
import resource
import sys
import threading
import time

from bcc import BPF

PROGRAM = r"""
struct event {
    u64 ts_ns;
    u64 cgroup_id;
    u32 pid, tid, uid, gid;
    s64 bytes;
    s32 fd;
    char comm[16];
};
BPF_RINGBUF_OUTPUT(events, RING_PAGES);
BPF_HASH(inflight, u32, s32, 16384);
BPF_ARRAY(lost, u64, 1);

TRACEPOINT_PROBE(syscalls, sys_enter_write) {
    u64 id = bpf_get_current_pid_tgid();
    if ((id >> 32) != TARGET) return 0;
    u32 tid = id;
    s32 fd = args->fd;
    inflight.update(&tid, &fd);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_write) {
    u64 id = bpf_get_current_pid_tgid();
    u32 tid = id;
    s32 *fd = inflight.lookup(&tid);
    if (!fd) return 0;
    struct event e = {};
    e.fd = *fd;
    inflight.delete(&tid);
    if (args->ret < 0) return 0;
    u64 ug = bpf_get_current_uid_gid();
    e.ts_ns = bpf_ktime_get_ns();
    e.cgroup_id = bpf_get_current_cgroup_id();
    e.pid = id >> 32; e.tid = tid; e.uid = ug; e.gid = ug >> 32;
    e.bytes = args->ret;
    bpf_get_current_comm(&e.comm, sizeof(e.comm));
    if (events.ringbuf_output(&e, sizeof(e), 0) != 0) {
        int zero = 0;
        u64 *n = lost.lookup(&zero);
        if (n) __sync_fetch_and_add(n, 1);
    }
    return 0;
}
"""


def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main():
    pid, calls = int(sys.argv[1]), int(sys.argv[2])
    ring = int(sys.argv[3]) if len(sys.argv) > 3 else 16 << 20
    b = BPF(text=PROGRAM.replace("TARGET", str(pid)).replace("RING_PAGES", str(ring // 4096)))
    state = {"delivered": 0, "checksum": 0, "done_at": None}
    events = b["events"]

    def callback(ctx, data, size):
        e = events.event(data)
        state["checksum"] += e.pid + e.tid + e.bytes
        state["delivered"] += 1
        if state["delivered"] == calls:
            state["done_at"] = time.monotonic()

    events.open_ring_buffer(callback)
    if sys.argv[4:] == ["prefill"]:
        print("ready", flush=True)
        sys.stdin.readline()
        cpu0, t0 = cpu(), time.monotonic()
        b.ring_buffer_consume()
        out = dict(state, lost=b["lost"][0].value, cpu_s=round(cpu() - cpu0, 3), seconds=round(time.monotonic() - t0, 3))
        out.pop("done_at")
        print(json.dumps(out), flush=True)
        return
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    print("ready", flush=True)
    cpu0, t0 = cpu(), time.monotonic()
    while not stop.is_set():
        b.ring_buffer_poll(20)
    b.ring_buffer_consume()
    lost = b["lost"][0].value
    end = state.pop("done_at") or time.monotonic()
    out = dict(state, lost=lost, cpu_s=round(cpu() - cpu0, 3), seconds=round(end - t0, 3))
    print(json.dumps(out), flush=True)


main()
