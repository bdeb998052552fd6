"""What a vector-only owner costs: resident memory and CPU time of the server process after
a workload that never needs the embedding model, with the model loaded on first need (the
default) and with --eager-model (what every start did before). Used for BENCHMARKS.md.

    python3 bench/startup.py [--binary PATH] [--runs 5] [--vectors 1000] [--searches 50]

Each run starts the binary on a fresh file, speaks MCP over stdio (initialize, then
create_index, upserts of 500 x 384 vectors, searches by vector, stats), reads the server's
own `resident_bytes` from stats and its user+system CPU time from /proc/<pid>/stat, then
closes stdin and times the exit. Modes alternate run by run. Prints each run and the
medians. The model must be on disk (scripts/fetch-model) for the eager mode to load it.
"""
import argparse, json, os, random, statistics, subprocess, tempfile, time

ap = argparse.ArgumentParser()
ap.add_argument("--binary", default=os.path.expanduser("~/.cache/stride-vectors/target/release/stride-vectors"))
ap.add_argument("--runs", type=int, default=5)
ap.add_argument("--vectors", type=int, default=1000)
ap.add_argument("--searches", type=int, default=50)
args = ap.parse_args()

random.seed(1)
DIM = 384
rows = [{"id": f"v{i}", "vector": [round(random.uniform(-1, 1), 6) for _ in range(DIM)]} for i in range(args.vectors)]
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def run(eager):
    with tempfile.TemporaryDirectory() as d:
        cmd = [args.binary, "--db", os.path.join(d, "v.duckdb")] + (["--eager-model"] if eager else [])
        env = dict(os.environ, STRIDE_VECTORS_LOG="warn")
        p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True, bufsize=1)
        next_id = [0]

        def rpc(method, params, notify=False):
            msg = {"jsonrpc": "2.0", "method": method, "params": params}
            if not notify:
                next_id[0] += 1
                msg["id"] = next_id[0]
            p.stdin.write(json.dumps(msg) + "\n")
            p.stdin.flush()
            if notify:
                return None
            while True:
                reply = json.loads(p.stdout.readline())
                if reply.get("id") == msg["id"]:
                    if "error" in reply or reply["result"].get("isError"):
                        raise SystemExit(f"{method} failed: {reply}")
                    return reply["result"]

        def tool(name, arguments):
            return rpc("tools/call", {"name": name, "arguments": arguments}).get("structuredContent")

        rpc("initialize", {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "startup-bench", "version": "0"}})
        rpc("notifications/initialized", {}, notify=True)
        tool("create_index", {"index": "bench", "dimension": DIM})
        for at in range(0, len(rows), 500):
            tool("upsert", {"index": "bench", "vectors": rows[at:at + 500]})
        for i in range(args.searches):
            tool("search", {"index": "bench", "vector": rows[i % len(rows)]["vector"], "top_k": 10})
        if eager:
            # Compare a loaded model with none: wait until the eager load is done.
            while tool("stats", {})["model_state"] in ("loading", "idle", "missing"):
                time.sleep(0.05)
        stats = tool("stats", {})
        cpu = cpu_seconds(p.pid)
        started = time.monotonic()
        p.stdin.close()
        p.wait(timeout=60)
        return stats["resident_bytes"] / 2**20, cpu, time.monotonic() - started, stats["model_state"]


results = {False: [], True: []}
for r in range(args.runs):
    for eager in (False, True):
        rss, cpu, exit_s, state = run(eager)
        results[eager].append((rss, cpu, exit_s))
        print(f"run {r + 1} {'eager' if eager else 'lazy '}: resident {rss:7.1f} MiB, cpu {cpu:5.2f} s, exit {exit_s * 1000:6.1f} ms, model {state}", flush=True)
for eager in (False, True):
    rss, cpu, exit_s = (statistics.median(x) for x in zip(*results[eager]))
    print(f"median {'--eager-model' if eager else 'default (lazy)'}: resident {rss:.1f} MiB, cpu {cpu:.2f} s, exit {exit_s * 1000:.1f} ms")
