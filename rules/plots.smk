# Figures per model and study, from the analysis tables.


rule plot:
    input:
        lambda wildcards: study_tables(wildcards.model, wildcards.study),
    output:
        f"{RESULTS}/{{model}}/figures/{{study}}/overview.png",
    log:
        f"{LOGS}/{{model}}/plot_{{study}}.log",
    conda:
        "../envs/analysis.yaml"
    shell:
        "iclscope plot {wildcards.study} --inputs {input:q} --out {output:q} > {log:q} 2>&1"
