# Run each prepared model over each task table, keeping only what the analyses need.


rule extract:
    input:
        card=model_card,
        tasks=lambda wildcards: task_table(wildcards.task),
    output:
        [f"{RESULTS}/{{model}}/extract/{{task}}/{t}.parquet" for t in EXTRACT_TABLES],
    log:
        f"{LOGS}/{{model}}/extract/{{task}}.log",
    benchmark:
        f"{BENCH}/{{model}}/extract/{{task}}.tsv"
    conda:
        "../envs/torch.yaml"
    resources:
        mem_mb=8000,
        runtime=120,
        gpu=1,
    params:
        spec=runtime_spec,
        model_dir=lambda wildcards: model_dir(wildcards.model),
    shell:
        "iclscope extract --model-dir {params.model_dir:q} --tasks {input.tasks:q}"
        " --params {params.spec:q} --out {output:q} > {log:q} 2>&1"


rule generate:
    input:
        card=model_card,
        tasks=task_table("binary_generation"),
    output:
        f"{RESULTS}/{{model}}/extract/binary_generation/generations.parquet",
    log:
        f"{LOGS}/{{model}}/generate.log",
    benchmark:
        f"{BENCH}/{{model}}/generate.tsv"
    conda:
        "../envs/torch.yaml"
    resources:
        mem_mb=8000,
        runtime=120,
        gpu=1,
    params:
        spec=lambda wildcards: canonical_json(
            {
                "runtime": runtime_params(wildcards),
                "generation": config["binary"]["generation"],
            }
        ),
        model_dir=lambda wildcards: model_dir(wildcards.model),
    shell:
        "iclscope generate --model-dir {params.model_dir:q} --tasks {input.tasks:q}"
        " --params {params.spec:q} --out {output:q} > {log:q} 2>&1"
