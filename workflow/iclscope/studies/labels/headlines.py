"""Study C's headline quantities for the findings (its ``headlines`` hook, :mod:`.plugin`).

Each reads the study's tables under ``results/{model}`` and returns :class:`iclscope.findings.Headline`
rows; :mod:`iclscope.findings` renders them.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

from iclscope.findings import Headline, _boot, _read, fmt

# the precision a label-sensitivity effect should reach (nats, full CI width)
TARGET_CI_WIDTH = 0.2
# the quantity suffixes of study C effects adjusted by their content-free twins (a
# cross-fitted control variate) and after contextual calibration with them
ADJUSTED_SUFFIX = " adjusted by content-free"
CALIBRATED_SUFFIX = " calibrated"
# study C effect quantity -> (summary kind, metric)
LABEL_EFFECT_FORMS = {
    "": ("pooled_difference", "logp_true"),
    ADJUSTED_SUFFIX: ("pooled_difference_adjusted", "logp_true"),
    CALIBRATED_SUFFIX: ("pooled_difference", "logp_true_calibrated"),
}


def label_effect_form(quantity: str) -> tuple[str, str, str, str]:
    """``"default - random adjusted by content-free"`` -> (a, b, summary kind, metric)."""
    for suffix in (ADJUSTED_SUFFIX, CALIBRATED_SUFFIX):
        if quantity.endswith(suffix):
            a, b = quantity.removesuffix(suffix).split(" - ")
            return (a, b, *LABEL_EFFECT_FORMS[suffix])
    a, b = quantity.split(" - ")
    return (a, b, *LABEL_EFFECT_FORMS[""])


def repeats_for_width(width: float, n: int, target: float) -> int:
    """Repeats needed for a CI of ``target`` width, from one of ``width`` at ``n`` repeats
    (a CI's width shrinks as 1 / sqrt(repeats)); ``n`` itself when already narrow enough."""
    if not (math.isfinite(width) and n > 0):
        return 0
    return max(n, math.ceil(n * (width / target) ** 2))

def label_headlines(root: Path, datasets: Sequence[str], seed: int, n_boot: int,
                    level: float) -> list[Headline]:
    """Study C per dataset: default - random and default - flipped effects pooled over
    positions, the share of late predictions following flipped labels, and the halfway
    recency effect (D->F vs F->D after 2N examples)."""
    out: list[Headline] = []
    for ds in datasets:
        src = f"labels/{ds}/summary.parquet"
        summary = _read(root, src, ["kind", "metric", "position_name", "condition", "condition_b", "mean",
                                    "ci_low", "ci_high", "n", "beta", "variance_ratio"])
        notes = {
            "": "log-likelihood of the true label, nats, paired by repeat",
            ADJUSTED_SUFFIX: "log-likelihood of the true label, nats, paired by repeat, minus beta times the same "
                             "difference between the conditions' content-free twins (a control variate of mean "
                             "zero; beta cross-fitted over repeats)",
            CALIBRATED_SUFFIX: "log-likelihood of the true label after contextual calibration with the "
                               "condition's content-free twin at each position, nats, paired by repeat",
        }
        for suffix, (kind, metric) in LABEL_EFFECT_FORMS.items():
            pooled = summary[(summary["kind"] == kind) & (summary["metric"] == metric)]
            for r in pooled.itertuples(index=False):
                effect = f"{r.condition} - {r.condition_b}{suffix}"
                out.append(Headline("labels", effect, f"{ds} {r.position_name}", float(r.mean), float(r.ci_low),
                                    float(r.ci_high), int(r.n), src, note=notes[suffix]))
                if suffix == ADJUSTED_SUFFIX:
                    out.append(Headline("labels", "control_beta", f"{ds} {r.position_name} {effect}",
                                        float(r.beta), n=int(r.n), source=src,
                                        note="the control variate's coefficient cov / var of the twins' "
                                             "difference, estimated on all repeats"))
                    out.append(Headline("labels", "control_variance_ratio", f"{ds} {r.position_name} {effect}",
                                        float(r.variance_ratio), n=int(r.n), source=src,
                                        note="variance over repeats of the adjusted effect over that of the plain "
                                             "one: below one the twins removed spread (read the adjusted form), "
                                             "near one they share no noise with the prompts (the forms agree)"))
                if r.condition != "default" or suffix == CALIBRATED_SUFFIX:
                    continue
                # the label-sensitivity effects: how precise are they?
                out.append(Headline("labels", f"repeats_for_ci_width_{fmt(TARGET_CI_WIDTH)}",
                                    f"{ds} {r.position_name} {effect}",
                                    float(repeats_for_width(r.ci_high - r.ci_low, int(r.n), TARGET_CI_WIDTH)),
                                    n=int(r.n), source=src,
                                    note="repeats needed for a CI of that width in nats, from this CI's width "
                                         "(widths shrink with the square root of the repeats)"))
        recency = summary[(summary["kind"] == "difference") & (summary["condition"] == "flip_df")
                          & (summary["condition_b"] == "flip_fd") & (summary["metric"] == "logp_true")]
        for r in recency.itertuples(index=False):
            out.append(Headline("labels", "flip_df - flip_fd", f"{ds} {r.position_name}", float(r.mean),
                                float(r.ci_low), float(r.ci_high), int(r.n), src,
                                note="log-likelihood of the true label, nats, paired by repeat"))

        src = f"labels/{ds}/positions.parquet"
        pos = _read(root, src, ["condition", "repeat", "position", "correct_context"])
        flipped = pos[pos["condition"] == "flipped"]
        if not flipped.empty:
            n_pos = int(pos["position"].max())
            late = flipped[flipped["position"] > n_pos - max(n_pos // 4, 1)]
            per_repeat = late.groupby("repeat")["correct_context"].mean().astype(float)
            mean, lo, hi, n = _boot(per_repeat.to_list(), seed, "labels", ds, "follow_flipped",
                                    n_boot=n_boot, level=level)
            out.append(Headline("labels", "follows_flipped_late", ds, mean, lo, hi, n, src,
                                note="share of argmax predictions equal to the flipped in-context label, "
                                     "last quarter of positions; CI over repeats"))
    return out
