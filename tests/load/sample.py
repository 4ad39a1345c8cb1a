#!/usr/bin/env python3
"""sample.py - samples resident memory and CPU of the widget store's
processes from /proc while a load runs: each service (by executable name), the
Kafka broker (the java process running kafka.Kafka) and PostgreSQL (all its
processes summed).

    python3 tests/load/sample.py --seconds 30 [--interval 1] [--pss-every 10] [--json FILE]

or, from Python, Sampler().start() ... stop() -> {name: {cpu_pct, rss_mb_max, ...}}.
CPU is the percentage of one core (200 = both cores of this machine). Memory
is RSS (resident) and PSS (resident, shared pages divided among sharers);
for PostgreSQL and Kafka groups read PSS, since RSS counts shared memory once
per process. CPU and RSS come from /proc/PID/stat at every sample; PSS only
at every tenth and the last, since the kernel walks every mapped page to add
it up (about 250 ms of CPU for one pass over PostgreSQL's and the broker's
processes here, which read every second took 11-23 % of a core from the
system being measured).
"""
import argparse
import json
import os
import threading
import time

SERVICES = ("api", "checkout", "inventory", "payment", "dispatch")
TICKS = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


def classify(pid):
    """Returns the group a process belongs to, or None."""
    try:
        with open(f"/proc/{pid}/comm") as f:
            comm = f.read().strip()
        if comm in SERVICES or comm == "loadgen":
            return comm
        if comm == "postgres":
            return "postgres"
        if comm == "java":
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"kafka.Kafka" in f.read():
                    return "kafka"
    except OSError:
        pass
    return None


def read_proc(pid, with_pss):
    """(cpu ticks, rss kB, pss kB or None) of one process, or None if it is
    gone. PSS shares each shared page among the processes mapping it, so
    summing it over PostgreSQL's processes does not count shared buffers many
    times."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        pss = None
        if with_pss:
            pss = 0
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        pss = int(line.split()[1])
                        break
        return int(fields[11]) + int(fields[12]), int(fields[21]) * PAGE_KB, pss
    except (OSError, IndexError, ValueError):
        return None


def snapshot(with_pss=True):
    """{group: (ticks by pid, [rss kB, pss kB or None] summed)}"""
    groups = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        group = classify(entry)
        if group is None:
            continue
        values = read_proc(entry, with_pss)
        if values is None:
            continue
        ticks, memory = groups.setdefault(group, ({}, [0, 0 if with_pss else None]))
        ticks[entry] = values[0]
        memory[0] += values[1]
        if with_pss:
            memory[1] += values[2]
    return groups


class Sampler:
    def __init__(self, interval=1.0, pss_every=10):
        self.interval = interval
        self.pss_every = max(1, pss_every)
        self.samples = []  # (time, snapshot)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            with_pss = len(self.samples) % self.pss_every == 0
            self.samples.append((time.monotonic(), snapshot(with_pss)))
            self._stop.wait(self.interval)
        self.samples.append((time.monotonic(), snapshot()))

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        self._thread.join()
        return self.summary()

    def summary(self):
        if len(self.samples) < 2:
            return {}
        t0, t1 = self.samples[0][0], self.samples[-1][0]
        out = {}
        for group in sorted({g for _, snap in self.samples for g in snap}):
            # CPU: for each process, ticks between the first and the last
            # sample that saw it, so processes that start or exit during the
            # run (a restarted service, the load generator) count too.
            seen = {}
            for _, snap in self.samples:
                for pid, ticks in snap.get(group, ({}, [0, 0]))[0].items():
                    seen.setdefault(pid, [ticks, ticks])[1] = ticks
            used = sum(last_ticks - first_ticks for first_ticks, last_ticks in seen.values())
            rss = [s[1][group][1][0] for s in self.samples if group in s[1]]
            pss = [s[1][group][1][1] for s in self.samples
                   if group in s[1] and s[1][group][1][1] is not None] or [0]
            out[group] = {
                "cpu_pct": round(100.0 * used / TICKS / (t1 - t0), 1),
                "rss_mb_max": round(max(rss) / 1024, 1),
                "rss_mb_avg": round(sum(rss) / len(rss) / 1024, 1),
                "pss_mb_max": round(max(pss) / 1024, 1),
            }
        return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--pss-every", type=int, default=10,
                        help="read PSS at every Nth sample (and the last); it is costly")
    parser.add_argument("--json")
    args = parser.parse_args()
    sampler = Sampler(args.interval, args.pss_every).start()
    time.sleep(args.seconds)
    summary = sampler.stop()
    print(f"{'process':10} {'cpu %':>7} {'rss MB max':>11} {'rss MB avg':>11} {'pss MB max':>11}")
    for name, figures in summary.items():
        print(f"{name:10} {figures['cpu_pct']:7.1f} {figures['rss_mb_max']:11.1f} "
              f"{figures['rss_mb_avg']:11.1f} {figures['pss_mb_max']:11.1f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=2)


if __name__ == "__main__":
    main()
