# Run each prepared model over each task table, keeping only what the analyses need.
# A task is split into `shards` jobs (a model's config key; 1 by default) and gathered.


rule extract:
    input:
        card=model_card,
        tasks=lambda wildcards: task_table(wildcards.task),
    output:
        temp(
            [
                f"{RESULTS}/{{model}}/extract/{{task}}/shards/{{shard}}-of-{{n}}/{t}.parquet"
                for t in EXTRACT_TABLES
            ]
        ),
    log:
        f"{LOGS}/{{model}}/extract/{{task}}.{{shard}}-of-{{n}}.log",
    benchmark:
        f"{BENCH}/{{model}}/extract/{{task}}.{{shard}}-of-{{n}}.tsv"
    conda:
        "../envs/torch.yaml"
    threads: all_cores()
    resources:
        mem_mb=planned_mem_mb,
        runtime=planned_runtime,
        gpu=planned_gpus,
        batch_tokens=batch_tokens,
    params:
        spec=extract_spec,
        model_dir=lambda wildcards: model_dir(wildcards.model),
    shell:
        "python -m iclscope extract --model-dir {params.model_dir:q} --tasks {input.tasks:q}"
        " --params {params.spec:q} --batch-tokens {resources.batch_tokens}"
        " --shard {wildcards.shard} --shards {wildcards.n}"
        " --out {output:q} > {log:q} 2>&1"


# a local job (also when the workflow is a module of another: a rule's own flag travels
# with it, where a localrules directive names the rule before a module renames it)
rule gather_extract:
    input:
        shard_tables,
    output:
        extracted("{model}", "{task}"),
    log:
        f"{LOGS}/{{model}}/gather/{{task}}.log",
    localrule: True
    conda:
        "../envs/analysis.yaml"
    shell:
        "python -m iclscope gather --inputs {input:q} --out {output:q} > {log:q} 2>&1"


# Sampled, not extracted: the one task a study registers in `sampled_tasks` (study A's
# generation; iclscope.registry.sampled_task).
rule generate:
    input:
        card=model_card,
        tasks=task_table(SAMPLED_TASK),
    output:
        f"{RESULTS}/{{model}}/extract/{SAMPLED_TASK}/generations.parquet",
    log:
        f"{LOGS}/{{model}}/generate.log",
    benchmark:
        f"{BENCH}/{{model}}/generate.tsv"
    conda:
        "../envs/torch.yaml"
    threads: all_cores()
    resources:
        mem_mb=planned_mem_mb,
        runtime=planned_runtime,
        gpu=planned_gpus,
        batch_tokens=batch_tokens,
    params:
        spec=generate_spec,
        model_dir=lambda wildcards: model_dir(wildcards.model),
    shell:
        "python -m iclscope generate --model-dir {params.model_dir:q} --tasks {input.tasks:q}"
        " --params {params.spec:q} --batch-tokens {resources.batch_tokens}"
        " --out {output:q} > {log:q} 2>&1"


# Not part of the default run: `snakemake results/bench/<model>/extract.json`.
rule bench_extract:
    input:
        card=model_card,
        tasks=[task_table(t) for t in TASKS if t != SAMPLED_TASK],
    output:
        f"{RESULTS}/bench/{{model}}/extract.json",
    log:
        f"{LOGS}/{{model}}/bench_extract.log",
    conda:
        "../envs/torch.yaml"
    threads: all_cores()
    resources:
        gpu=1,
    params:
        spec=runtime_spec,
        model_dir=lambda wildcards: model_dir(wildcards.model),
    shell:
        "python -m iclscope bench extract --model-dir {params.model_dir:q} --tasks {input.tasks:q}"
        " --params {params.spec:q} --out {output:q} > {log:q} 2>&1"
