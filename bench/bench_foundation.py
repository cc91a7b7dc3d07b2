#!/usr/bin/env python3
"""bench/bench_foundation.py — checkpoint writing and inspect speed (the foundation issue).

Writes the synth bench models with `moetool synth`, then copies each one with `cp`, with `cat`
(every byte through user space, like the writer) and with bench_writer (the safetensors writer
alone: mmap in, positional writes out), each timed until the data is on disk (command + sync),
REPS times interleaved, reporting medians and ratios against the baselines of the same run. Also
`inspect` time and peak memory: the writer's heap (RssAnon, sampled per tensor) and synth's peak RSS
must not grow with model size. Standard library only.
Usage: bench/bench_foundation.py [--bin build/moetool] [--work build/bench] [--reps 3]
"""
import argparse, json, os, shutil, statistics, subprocess, sys, tempfile, time


def timed(cmd, shell=False):
    """Wall seconds of cmd followed by sync, peak RSS (KiB) of cmd, and its stdout."""
    os.sync()
    with tempfile.NamedTemporaryFile() as tf:
        t0 = time.perf_counter()
        full = ["/usr/bin/time", "-f", "%M", "-o", tf.name] + (["sh", "-c", cmd] if shell else cmd)
        out = subprocess.run(full, check=True, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True).stdout
        os.sync()
        dt = time.perf_counter() - t0
        kb = int(open(tf.name).read().split()[-1])
    return dt, kb, out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="build/moetool")
    ap.add_argument("--work", default="build/bench")
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    writer = os.path.join(os.path.dirname(a.bin), "bench_writer")
    os.makedirs(a.work, exist_ok=True)
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    mem = int(next(l.split()[1] for l in open("/proc/meminfo") if l.startswith("MemTotal"))) // 1048576
    ver = subprocess.run([a.bin, "--version"], stdout=subprocess.PIPE, text=True).stdout.splitlines()[0]
    print(f"machine: {os.cpu_count()} cores, {mem} GiB, {cpu}; {ver}; medians of {a.reps} runs, times include sync")
    print("| model | dtype | bytes | cp s | cat s | writer s | writer vs cp | writer vs cat | writer peak heap | "
          "synth s | synth vs cat | synth peak RSS | inspect s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for fam, preset, dt in [("llama", "tiny", "f32"), ("llama", "bench", "bf16"), ("mixtral", "bench", "bf16")]:
        src = os.path.join(a.work, f"{fam}-{preset}")
        res = {k: [] for k in ("cp", "cat", "writer", "synth")}
        heap = synth_kb = 0
        for r in range(a.reps):
            s, kb, _ = timed([a.bin, "synth", "--family", fam, "--preset", preset, "--dtype", dt, "-o", src, "-q",
                              "--force"])
            res["synth"].append(s)
            synth_kb = max(synth_kb, kb)
            for name in ("cp", "cat", "writer"):
                dst = src + "." + name
                shutil.rmtree(dst, ignore_errors=True)
                if name == "cp":
                    t, _, _ = timed(["cp", "-r", src, dst])
                elif name == "cat":
                    os.makedirs(dst)
                    t, _, _ = timed(f"for f in '{src}'/*; do cat \"$f\" > '{dst}'/$(basename \"$f\"); done", shell=True)
                else:
                    t, _, out = timed([writer, src, dst])
                    heap = max(heap, json.loads(out)["peak_anon_kib"])
                res[name].append(t)
                shutil.rmtree(dst, ignore_errors=True)
        ins, _, _ = timed([a.bin, "inspect", src])
        nbytes = sum(os.path.getsize(os.path.join(src, f)) for f in os.listdir(src))
        m = {k: statistics.median(v) for k, v in res.items()}
        print(f"| {fam} {preset} | {dt} | {nbytes:,} | {m['cp']:.2f} | {m['cat']:.2f} | {m['writer']:.2f} | "
              f"{m['cp'] / m['writer']:.2f}x | {m['cat'] / m['writer']:.2f}x | {heap / 1024:.1f} MiB | {m['synth']:.2f} | "
              f"{m['cat'] / m['synth']:.2f}x | {synth_kb // 1024} MiB | {ins:.3f} |")
        shutil.rmtree(src, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
