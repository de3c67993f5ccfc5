"""The extraction engine: run a prepared model over a task table and keep only what the
analyses need (issue 3). One module per concept:

- :mod:`.tokens`: tokenising prompts and mapping character spans to token ranges;
- :mod:`.batching`: length-sorted batches under a token budget, padded with correct
  attention masks and position ids.
"""
