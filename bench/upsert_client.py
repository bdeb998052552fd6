"""Upsert load through MCP with a client that costs (almost) nothing: every request line is
built before the clock starts. Used for the upsert profiles in BENCHMARKS.md.

    python3 bench/upsert_client.py [BINARY...] [--calls 40] [--in-flight 1] [--runs 1]

For each run and each binary (alternating, so drift hits all alike): prints the server's PID
(for `perf record -p`), waits 3 s, then sends CALLS upserts of 500 x 384 vectors with
metadata into a fresh file, at most IN_FLIGHT unanswered at once. With several runs, ends
with each binary's median.
"""
import argparse, json, os, random, struct, subprocess, tempfile, threading, time

ap = argparse.ArgumentParser()
ap.add_argument("binary", nargs="*", default=[os.path.expanduser("~/.cache/stride-vectors/target/release/stride-vectors")])
ap.add_argument("--calls", type=int, default=40)
ap.add_argument("--in-flight", type=int, default=1)
ap.add_argument("--runs", type=int, default=1)
ap.add_argument("--full-precision", action="store_true",
                help="send each number as the shortest text of an f32 widened to f64 (17 digits, as"
                     " JavaScript prints a Float32Array's values), not rounded to 7 decimals")
args = ap.parse_args()

random.seed(1)
def number():
    x = random.uniform(-1, 1)
    return struct.unpack("f", struct.pack("f", x))[0] if args.full_precision else round(x, 7)
lines = []
for b in range(args.calls):
    rows = [{"id": f"v{b * 500 + i}", "vector": [number() for _ in range(384)],
             "metadata": {"group": i % 10, "userId": f"u{i % 100}"}} for i in range(500)]
    lines.append((json.dumps({"jsonrpc": "2.0", "id": b + 1, "method": "tools/call", "params": {
        "name": "upsert", "arguments": {"index": "bench", "create_index": {"dimension": 384}, "vectors": rows}}}) + "\n").encode())

def run(binary):
    db = os.path.join(tempfile.mkdtemp(prefix="upsert-client-"), "x.duckdb")
    p = subprocess.Popen([binary, "--db", db, "--log", "warn"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    def send(m): p.stdin.write((json.dumps(m) + "\n").encode()); p.stdin.flush()
    send({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "upsert-client", "version": "0"}}})
    json.loads(p.stdout.readline())
    send({"jsonrpc": "2.0", "method": "notifications/initialized"})
    print("pid", p.pid, flush=True)
    time.sleep(3)
    slots = threading.Semaphore(args.in_flight)
    def read_answers():
        for _ in lines:
            m = json.loads(p.stdout.readline())
            slots.release()
            assert "error" not in m and not m["result"].get("isError"), m
    reader = threading.Thread(target=read_answers)
    start = time.time()
    reader.start()
    for line in lines:
        slots.acquire()
        p.stdin.write(line); p.stdin.flush()
    reader.join()
    elapsed = time.time() - start
    n = args.calls * 500
    rss_kib = next(int(l.split()[1]) for l in open(f"/proc/{p.pid}/status") if l.startswith("VmRSS"))
    print(f"{binary}: {n} vectors in {elapsed:.2f}s: {n / elapsed:.0f} vectors/s ({args.in_flight} in flight), "
          f"server resident {rss_kib >> 10} MiB", flush=True)
    p.stdin.close(); p.wait()
    return n / elapsed

results = {b: [] for b in args.binary}
for _ in range(args.runs):
    for b in args.binary:
        results[b].append(run(b))
if args.runs > 1:
    for b, r in results.items():
        print(f"{b}: median {sorted(r)[len(r) // 2]:.0f} vectors/s of {len(r)} runs: {', '.join(f'{x:.0f}' for x in r)}")
