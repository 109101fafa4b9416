"""Contracts every step shares (below train, predict, evaluate and serve).

- `predictions`: the predictions file (schema, reader, writer);
- `scores`: the confidence-score registry (names -> functions of logits) and its resolver;
- `selective`: the selective classifier file (selective.json), its reader/writer and `apply`.
"""
