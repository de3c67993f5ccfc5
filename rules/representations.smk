# Study B: representations before and after ICL (Yousefi et al., 2024).


rule analyse_representations:
    input:
        tasks=[task_table(t) for t in ("regression", "reading")],
        regression=lambda wildcards: extracted(wildcards.model, "regression"),
        reading=lambda wildcards: extracted(wildcards.model, "reading"),
    output:
        [
            f"{RESULTS}/{{model}}/representations/{t}.parquet"
            for t in REPRESENTATION_TABLES
        ],
    log:
        f"{LOGS}/{{model}}/analyse_representations.log",
    conda:
        "../envs/analysis.yaml"
    params:
        spec=lambda wildcards: canonical_json(
            {"seed": config["seed"], "representations": config["representations"]}
        ),
    shell:
        "iclscope analyse representations --inputs {input:q} --params {params.spec:q}"
        " --out {output:q} > {log:q} 2>&1"
