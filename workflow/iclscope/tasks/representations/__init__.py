"""Study B task builders: representations before and after ICL (Yousefi et al., arXiv 2310.00313).

Each builder takes ``cfg = config["representations"]`` and the global seed and returns a
task table (see :mod:`iclscope.tasks.common`; schemas :data:`iclscope.contracts.REGRESSION_TASK`
and ``READING_TASK``). Every condition has ``n_variants``
variants; each variant is emitted once per ``n_shots`` value k, using the first k of
its solved examples, so the prompts of one variant are nested: they share the query
and, for larger k, extend the examples of smaller k.

Controls built into the draws (each tested in tests/test_tasks_representations.py):

* regression: the query x, the example x's and the noise depend on the variant only, so
  every condition sees the same x's (paired by variant). Conditions then differ only in
  their y values, before-ICL prompts (k = 0) of a variant are identical across conditions,
  and condition means cannot track x.
* reading: ``n_variants`` must be even and ``relevant_first`` is True for exactly half the
  variants of every condition (so within every (condition, n_shots)); solved examples share
  no name and no activity with the query's story, so neither the correct activity nor the
  distractor's activity ever appears in the context (no copying, no priming of either);
  the solved examples' own sentence order is balanced within each prompt
  (:func:`balanced_example_orders`), so the context does not teach a position.

One module per task, beside what they share:

:mod:`.regression`
    B1, linear regression in context (:func:`build_regression`)
:mod:`.reading`
    B2, reading comprehension (:func:`build_reading`)
:mod:`.shared`
    the spans and condition fields the builders name, numbers as prompts write them, the
    config checks and the few-shot layout
"""

from iclscope.tasks.representations.reading import (
    STORY_JOINER,
    balanced_example_orders,
    balanced_orders,
    build_reading,
    load_items,
)
from iclscope.tasks.representations.regression import (
    answer_affixes,
    build_regression,
    number_candidates,
    regression_draws,
    regression_targets,
)
from iclscope.tasks.representations.shared import CONDITION_FIELDS, TASK_SPANS, format_number

__all__ = [
    "CONDITION_FIELDS", "STORY_JOINER", "TASK_SPANS", "answer_affixes", "balanced_example_orders", "balanced_orders",
    "build_reading", "build_regression", "format_number", "load_items", "number_candidates", "regression_draws",
    "regression_targets",
]
