"""Working-memory budgets of the engine's reductions.

Every temporary the engine makes beside the model's own forward grows with the model's
width, heads or vocabulary and with the sequence length. Each is computed in chunks that
stay under its budget here, so a 70B-wide model with long prompts needs no more working
memory than these constants say (``iclscope plan`` counts them from here). Within its
budget a reduction runs in one piece, exactly as an unchunked one would, so chunking
never changes a table that fits.
"""

from __future__ import annotations

MiB = 1024 * 1024

# attention capture: float32 keys of the captured query rows, repeated over each key/value
# head's query heads, (items, heads, T, head_dim), plus their (items, heads, T) scores
CAPTURE_BYTES = 256 * MiB
# span pooling: the float32 copy of a chunk of the batch's tokens that a model not in
# float32 sums in (a float32 model's tokens are summed where they are), (tokens, width)
POOL_BYTES = 256 * MiB
# LM head at read positions: float32 logits of one chunk of rows, (rows, vocabulary); the
# log-softmax makes a second such tensor. 192 MiB is 1024 rows of a 49,152-token vocabulary.
HEAD_BYTES = 192 * MiB


def chunk_count(n_items: int, bytes_per_item: int, budget: int) -> int:
    """Items per chunk so that ``chunk * bytes_per_item`` stays within ``budget`` (at
    least one; all ``n_items`` when they fit)."""
    if n_items <= 0:
        return 1
    return max(1, min(n_items, budget // max(1, bytes_per_item)))
