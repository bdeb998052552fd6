"""The reference BM25 for tests/bm25.rs: bm25s (PyPI, method "lucene", float64), fed the very
tokens our index was given. Reads one JSON object on stdin:
    {"k1": .., "b": .., "ids": [...], "corpus": [[token, ...], ...], "queries": [[token, ...], ...]}
and prints, for each query, every document with a positive score as [id, score], best first.
"""
import json
import sys

import bm25s


def main() -> None:
    job = json.load(sys.stdin)
    retriever = bm25s.BM25(method="lucene", k1=job["k1"], b=job["b"], dtype="float64")
    retriever.index(job["corpus"], show_progress=False)
    out = []
    for query in job["queries"]:
        known = [t for t in query if t in retriever.vocab_dict]
        scores = retriever.get_scores(known) if known else [0.0] * len(job["ids"])
        hits = [[job["ids"][i], float(s)] for i, s in enumerate(scores) if s > 0]
        hits.sort(key=lambda h: (-h[1], h[0]))
        out.append(hits)
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
