// A stand-in for Ollama that speaks its real wire format, for tests that start the release
// binary with `--embedder ollama --ollama-url <url> --dimension 8`:
//
//   POST /api/embed       {model, input: "text" | ["text", ...]}  ->  {model, embeddings: [[...]]}
//   POST /api/embeddings  {model, prompt: "text"}                 ->  {embedding: [...]}  (legacy)
//
// The vector of a text is a pure function of the text (`fakeVector`): 8 values derived from
// its SHA-256, each an odd multiple of 1/256 in (-1, 1), so never all zero and exact in f32
// (what we compute here is bit for bit what DuckDB stores). It is the same function as
// `vector_of` in tests/common/ollama.rs. The server records how many calls and texts it saw.

import { createHash } from "node:crypto";
import http from "node:http";

export const FAKE_DIM = 8;

/** The embedding the fake gives `text`: deterministic, never all zero, exact in f32. */
export function fakeVector(text) {
  const h = createHash("sha256").update(text, "utf8").digest();
  const out = [];
  for (let i = 0; i < FAKE_DIM; i++) out.push((h[i] - 127.5) / 128);
  return out;
}

/**
 * Starts the fake on 127.0.0.1 and an ephemeral port. Returns
 *   url           -> "http://127.0.0.1:<port>" (for --ollama-url)
 *   stats()       -> {calls, texts} seen so far
 *   close()       -> stops listening and drops open connections
 */
export async function startFakeOllama() {
  let calls = 0;
  let texts = 0;
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      const reply = (status, body) => {
        const text = JSON.stringify(body);
        res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
        res.end(text);
      };
      let body;
      try {
        body = JSON.parse(Buffer.concat(chunks).toString("utf8") || "null");
      } catch {
        reply(400, { error: "invalid JSON" });
        return;
      }
      if (req.method !== "POST") {
        reply(404, { error: "not found" });
        return;
      }
      if (req.url === "/api/embed") {
        const input = body?.input;
        const list = typeof input === "string" ? [input] : Array.isArray(input) ? input : null;
        if (!list || list.some((t) => typeof t !== "string")) {
          reply(400, { error: "input required" });
          return;
        }
        calls++;
        texts += list.length;
        reply(200, { model: body.model, embeddings: list.map(fakeVector) });
        return;
      }
      if (req.url === "/api/embeddings") {
        if (typeof body?.prompt !== "string") {
          reply(400, { error: "prompt required" });
          return;
        }
        calls++;
        texts++;
        reply(200, { embedding: fakeVector(body.prompt) });
        return;
      }
      reply(404, { error: "not found" });
    });
  });
  await new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", resolve);
  });
  const { port } = server.address();
  return {
    url: `http://127.0.0.1:${port}`,
    stats: () => ({ calls, texts }),
    close: () =>
      new Promise((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections?.();
      }),
  };
}
