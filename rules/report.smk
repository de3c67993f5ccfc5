# One HTML page with every figure, grouped by model and study.


rule report:
    input:
        all_figures(),
    output:
        f"{RESULTS}/report.html",
    log:
        f"{LOGS}/report.log",
    conda:
        "../envs/analysis.yaml"
    shell:
        "python -m iclscope report --figures {input:q} --out {output:q} > {log:q} 2>&1"
