# Build the prompt tables of every study (model-independent).


rule build_tasks:
    input:
        task_inputs,
    output:
        f"{RESULTS}/tasks/{{task}}.parquet",
    params:
        spec=task_spec,
    log:
        f"{LOGS}/tasks/{{task}}.log",
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        "../envs/torch.yaml"
    shell:
        "iclscope build-tasks --task {wildcards.task} --params {params.spec:q} --out {output:q} > {log:q} 2>&1"
