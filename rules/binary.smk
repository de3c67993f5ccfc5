# Study A: binary-sequence dynamics (Bigelow et al., 2024).


rule analyse_binary:
    input:
        tasks=[task_table(t) for t in ("binary_judgment", "binary_continuation")],
        generations=f"{RESULTS}/{{model}}/extract/binary_generation/generations.parquet",
        judgment=lambda wildcards: extracted(wildcards.model, "binary_judgment"),
        continuation=lambda wildcards: extracted(wildcards.model, "binary_continuation"),
    output:
        [f"{RESULTS}/{{model}}/binary/{t}.parquet" for t in BINARY_TABLES],
    log:
        f"{LOGS}/{{model}}/analyse_binary.log",
    conda:
        "../envs/analysis.yaml"
    params:
        spec=lambda wildcards: canonical_json(
            {"seed": config["seed"], "binary": config["binary"]}
        ),
    shell:
        "iclscope analyse binary --inputs {input:q} --params {params.spec:q} --out {output:q} > {log:q} 2>&1"
