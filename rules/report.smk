# One HTML page with each model's findings and every figure, grouped by model and study.


rule report:
    input:
        figures=all_figures() + [t for t in compare_targets() if t.endswith(".png")],
        findings=[f"{RESULTS}/{m}/findings.md" for m in MODELS]
        + [t for t in compare_targets() if t.endswith("findings.md")],
    output:
        f"{RESULTS}/report.html",
    log:
        f"{LOGS}/report.log",
    conda:
        "../envs/analysis.yaml"
    shell:
        "python -m iclscope report --figures {input.figures:q} --findings {input.findings:q}"
        " --out {output:q} > {log:q} 2>&1"
