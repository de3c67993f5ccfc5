# Study C: label relationships (Kossen, Gal, Rainforth, 2024), one job per dataset.


rule analyse_labels:
    input:
        tasks=lambda wildcards: task_table(f"labels_{wildcards.dataset}"),
        extracted=lambda wildcards: extracted(
            wildcards.model, f"labels_{wildcards.dataset}"
        ),
    output:
        [f"{RESULTS}/{{model}}/labels/{{dataset}}/{t}.parquet" for t in LABEL_TABLES],
    log:
        f"{LOGS}/{{model}}/analyse_labels_{{dataset}}.log",
    conda:
        "../envs/analysis.yaml"
    params:
        spec=lambda wildcards: canonical_json(
            task_params(f"labels_{wildcards.dataset}", config)
        ),
    shell:
        "iclscope analyse labels --inputs {input:q} --params {params.spec:q} --out {output:q} > {log:q} 2>&1"
