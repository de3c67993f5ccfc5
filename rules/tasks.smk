# Build the prompt tables of every study (model-independent).


rule build_tasks:
    input:
        task_inputs,
    output:
        f"{RESULTS}/tasks/{{task}}.parquet",
    log:
        f"{LOGS}/tasks/{{task}}.log",
    conda:
        "../envs/analysis.yaml"
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        spec=task_spec,
    shell:
        "python -m iclscope build-tasks --task {wildcards.task} --params {params.spec:q} --out {output:q} > {log:q} 2>&1"
